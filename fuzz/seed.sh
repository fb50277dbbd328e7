#!/usr/bin/env bash
# Seeds fuzz/corpus/<target>/ from a real repository: builds one with the pluto binary
# from the fuzz key's recovery words (so the targets' fixed key opens it), takes two
# snapshots, and copies its packs, index, snapshot, config and secret files; the
# plaintext inside them (index, pack headers, trees, snapshots, config) is written by
# the replay test's `write_fuzz_seeds`. Safe to run again: seeds are only added.
#
#   fuzz/seed.sh                 # uses $PLUTO_BIN, else builds target/release/pluto
set -euo pipefail
FUZZ="$(cd "$(dirname "$0")" && pwd)"
ROOT="$FUZZ/.."
CORPUS="$FUZZ/corpus"
WORDS="drastic bamboo mountain loyal category cancel animal embark drastic bamboo mountain loyal category cancel animal embark drastic bamboo mountain loyal category cancel animal embark"

BIN="${PLUTO_BIN:-}"
if [ -z "$BIN" ]; then
  (cd "$ROOT" && cargo build --release -q -p pluto)
  BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/pluto"
fi

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
SRC="$WORK/src"
mkdir -p "$SRC/docs/deeper" "$SRC/media"
printf 'hello, pluto\n' > "$SRC/hello.txt"
for i in $(seq 1 40); do echo "line $i of a document that compresses well" ; done > "$SRC/docs/text.md"
head -c 30000 /dev/urandom > "$SRC/media/noise.bin"
: > "$SRC/empty"
ln -s ../hello.txt "$SRC/docs/link"
ln "$SRC/hello.txt" "$SRC/docs/deeper/hardlink"
printf 'odd name\n' > "$SRC/docs/deeper/$(printf 'new\nline')"
chmod 600 "$SRC/docs/text.md"

echo "$WORDS" | "$BIN" init --recover -q "$SRC" >/dev/null
(cd "$SRC" && "$BIN" snapshot -q -m one --tag seed)
echo "edited" >> "$SRC/docs/text.md"
rm "$SRC/empty"
(cd "$SRC" && "$BIN" snapshot -q -m two)
REPO="$SRC/.pluto"

copy() { # target files...
  local t="$1"; shift
  mkdir -p "$CORPUS/$t"
  for f in "$@"; do cp "$f" "$CORPUS/$t/$(basename "$f")"; done
}
copy pack_file $(find "$REPO/packs" -type f)
copy sealed_file "$REPO"/index/* "$REPO"/snapshots/* "$REPO/config"
copy secret "$REPO/secret"

# The handshake target: mode byte, then u16-LE-length-prefixed messages (harness/noise.rs).
mkdir -p "$CORPUS/handshake"
printf '\x03\x06\x00\x00hello' > "$CORPUS/handshake/transport-one-message"
printf '\x03\x03\x00\x01ab\x03\x00\x00cd' > "$CORPUS/handshake/transport-two-fragments"
printf '\x00\x20\x00%032d' 0 > "$CORPUS/handshake/raw-first-message"
printf '\x01%098d' 0 > "$CORPUS/handshake/identity-sized-payload"
printf '\x02%098d' 0 > "$CORPUS/handshake/identity-sized-payload-to-initiator"

# Plaintext seeds, through the same harness code the targets run.
(cd "$ROOT" && PLUTO_FUZZ_SEED_REPO="$REPO" PLUTO_FUZZ_CORPUS="$CORPUS" \
  cargo test -q -p pluto-repo --test fuzz_regressions write_fuzz_seeds -- --ignored >/dev/null)

for d in "$CORPUS"/*/; do echo "$(ls "$d" | wc -l) seeds in ${d#$FUZZ/}"; done
