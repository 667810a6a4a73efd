"""Speech data: audio files in and out, the log-mel front-end, transcripts, `temper prep --format audio_*`, batches."""
