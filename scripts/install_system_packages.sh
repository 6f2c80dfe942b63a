#!/usr/bin/env bash
# Debian packages effx uses, installed when this machine can (root + apt-get); otherwise say
# what is missing. Packages: chromium (the book's browser test), pocketsphinx-testdata (real
# speech clips: typical utterance lengths), dataset-fashion-mnist (real images).
set -uo pipefail
packages=(chromium pocketsphinx-testdata dataset-fashion-mnist)
missing=()
for p in "${packages[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "== installing Debian packages: ${missing[*]}"
  apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || echo "effx: warning: could not install ${missing[*]}; the features that need them will say so"
else
  echo "effx: note: not installed: ${missing[*]} (install them with apt-get as root for the browser test and the speech/image datasets)"
fi
exit 0
