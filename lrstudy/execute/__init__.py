"""Execute stage: claim a study's unfinished trials and run them (in-process, local workers, Ray)."""
