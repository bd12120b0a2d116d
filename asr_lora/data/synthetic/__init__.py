"""The synthetic speech source: the text it is rendered from (`sentences`: sentence and terms
files, each line kept, written out in words or skipped with its reason), offline TTS engines
(`engines`, with the persistent Festival process in `festival_pipe`), the voice inventory and its
dev/test parts (`voices`), and the corpus planner (`corpus`) and renderer (`render`) that turn
sentence files into a manifest the data pipeline then reads like any other source."""
