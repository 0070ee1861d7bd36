"""The media pipeline around the model: fetching (yt-dlp behind an egress proxy), tempo, bars, windows,
audio encoding; ``stages`` turns a task document into a model request and the model's output into the
delivered audio."""
