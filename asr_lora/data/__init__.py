"""From files on disk to model inputs. `readers` turn each corpus layout into `Record`s (every row
counted in a `Ledger`, `records`); `synthetic` renders a corpus from sentence files (the shipped
Singapore English ones by default); `sources` reads the configured source; `audio` decodes and
checks clips, `text` normalises transcripts, `splits` turns records into filtered, tokenised
`datasets` splits and the data report (or `streaming` into sharded manifests at corpus scale),
`loading` picks between the two for an entry point, `selection` chooses the rows a run uses;
`features` computes log-mel and collates training batches, with `augment` applying training-only
augmentation."""
