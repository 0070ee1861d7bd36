"""The worker process and its serving loop: the RQ worker that feeds the engine, the job boundary
(every task ends completed or failed), progress and audio-chunk publishing, and the health check."""
