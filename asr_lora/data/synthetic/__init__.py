"""The synthetic speech source: offline TTS engines (`engines`, with the persistent Festival
process in `festival_pipe`), the voice inventory and its dev/test parts (`voices`), and the
corpus planner and renderer (`corpus`) that turns sentence files into a manifest the data
pipeline then reads like any other source."""
