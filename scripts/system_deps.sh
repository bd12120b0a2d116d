#!/usr/bin/env bash
# Installs the Debian packages the corpus synthesis and control set need when run as root;
# otherwise names what is missing and how to get it (the Python side still installs).
set -u
missing=()
for p in $PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  # The unseen-engine voices (SVOX Pico, MBROLA) live in Debian's contrib and non-free components.
  src=/etc/apt/sources.list.d/asr-lora-contrib-nonfree.sources
  if [ ! -f "$src" ] && . /etc/os-release && [ -n "${VERSION_CODENAME:-}" ]; then
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: contrib non-free\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
      "$VERSION_CODENAME" > "$src"
  fi
  apt-get update -qq >/dev/null && apt-get install -y -qq "${missing[@]}" >/dev/null || {
    echo "apt-get install failed for: ${missing[*]}" >&2; exit 1; }
else
  echo "warning: missing Debian packages (run as root or: sudo apt-get install ${missing[*]}):" >&2
  echo "  ${missing[*]}" >&2
fi
