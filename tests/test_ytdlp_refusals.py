"""YouTube's refusals end a task with a sentence a musician understands.

Each refusal is raised the way yt-dlp's YouTube extractor raises it (its own
helpers and exception types, YouTube's own wording), by an extractor
registered in a real ``YoutubeDL``, so the exception reaching Segue is
wrapped exactly as in production (``DownloadError`` around the original).
"""

import pytest

from worker.pipeline.fetcher import describe_ytdlp_error

VIDEO = "https://www.youtube.com/watch?v=dQw4w9WgXcQ"


def _raise_through_ytdlp(raise_it):
    import yt_dlp
    from yt_dlp.extractor.common import InfoExtractor

    class RefusingYoutubeIE(InfoExtractor):
        IE_NAME = "youtube"
        _VALID_URL = r"https?://www\.youtube\.com/watch\?v=(?P<id>[\w-]+)"

        def _real_extract(self, url):
            raise_it(self, self._match_id(url))

    with yt_dlp.YoutubeDL({"quiet": True, "no_warnings": True}) as ydl:
        ydl.add_info_extractor(RefusingYoutubeIE())
        with pytest.raises(yt_dlp.utils.DownloadError) as raised:
            ydl.extract_info(VIDEO, download=False, ie_key="RefusingYoutube")
    return raised.value


def _no_formats(reason):
    return lambda ie, video_id: ie.raise_no_formats(reason, expected=True, video_id=video_id)


# (yt-dlp raising it as the YouTube extractor does, the start of what the musician reads, the host hint)
CASES = {
    "bot check": (
        _no_formats("Sign in to confirm you\u2019re not a bot. Use --cookies-from-browser or --cookies for the "
                    "authentication"),
        "YouTube asked this server to sign in to prove it is not a bot", ("SEGUE_YTDLP_COOKIES", "SEGUE_YTDLP_PROXY")),
    "age restricted": (
        lambda ie, vid: ie.raise_login_required("Sign in to confirm your age. This video may be inappropriate "
                                                "for some users", method="cookies"),
        "This video is age-restricted on YouTube", ("SEGUE_YTDLP_COOKIES",)),
    "private": (
        _no_formats("Private video. Sign in if you've been granted access to this video"),
        "This video is private on YouTube", ()),
    "members only": (
        _no_formats("Join this channel to get access to members-only content like this video, and other "
                    "exclusive perks."),
        "This video is for the channel's members only", ("SEGUE_YTDLP_COOKIES",)),
    "not in this country": (
        lambda ie, vid: ie.raise_geo_restricted(
            "The uploader has not made this video available in your country", countries=["JP"]),
        "This video is not available in the server's country", ("SEGUE_YTDLP_PROXY",)),
    "live not started": (
        _no_formats("This live event will begin in 3 hours."),
        "This live stream or premiere has not started yet", ()),
    "premiere not started": (
        _no_formats("Premieres in 2 days"),
        "This live stream or premiere has not started yet", ()),
    "removed": (
        _no_formats("Video unavailable. This video has been removed by the uploader"),
        "This video has been removed from YouTube or is unavailable", ()),
    "terminated account": (
        _no_formats("This video is no longer available because the YouTube account associated with this video "
                    "has been terminated."),
        "This video has been removed from YouTube or is unavailable", ()),
    "rate limited": (
        _no_formats("This content isn't available, try again later. The current session has been rate-limited "
                    "by YouTube for up to an hour."),
        "YouTube is limiting how often this server may download", ("SEGUE_YTDLP_COOKIES", "SEGUE_YTDLP_PROXY")),
}


@pytest.mark.parametrize("case", CASES)
def test_youtube_refusal_reads_as_a_sentence(case):
    raise_it, opening, hints = CASES[case]
    message = describe_ytdlp_error(_raise_through_ytdlp(raise_it))
    assert message.startswith(opening), message
    for hint in hints:
        assert hint in message, message
    # No yt-dlp noise: no "ERROR:", no extractor tag, no command-line flags, no bug-report plea.
    for noise in ("ERROR", "[youtube]", "--cookies", "report this issue", "dQw4w9WgXcQ"):
        assert noise not in message, message


def test_other_errors_are_not_mistaken_for_refusals():
    from yt_dlp.utils import ExtractorError

    error = _raise_through_ytdlp(lambda ie, vid: (_ for _ in ()).throw(
        ExtractorError("Unable to extract initial player response", expected=True)))
    assert describe_ytdlp_error(error) == "Unable to extract initial player response"
