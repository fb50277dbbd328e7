#!/usr/bin/env bash
# pluto against restic, side by side, on the phases of a nightly backup:
# first snapshot, no-change snapshot, snapshot after an edit, restore, check --read-data,
# repository size, stored growth and peak RSS. Runs are interleaved (pluto and restic
# alternate, order rotated per rep) and the table shows medians and the median of the
# per-rep pluto/restic ratios: the machine may be shared and noisy, so compare ratios.
#
# Usage: benches/compare.sh [--reps N] [--corpus mixed|real|sparse|both|"mixed sparse"] [--out RESULTS.tsv]
#        (sparse: a 10 GiB sparse disk image with ~8 MiB of data: holes must not be read)
# Env:   CORPUS_ROOT (default /tmp/pluto-bench; the corpus is generated there if missing),
#        WORKDIR (scratch space for repositories, default /tmp/pluto-bench/run),
#        CARGO_TARGET_DIR (where pluto is built), PLUTO (use this binary, skip the build).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
REPS=3
CORPORA=mixed
OUT=""
while [ $# -gt 0 ]; do
  case $1 in
    --reps) REPS=$2; shift 2;;
    --corpus) CORPORA=$2; [ "$CORPORA" = both ] && CORPORA="mixed real"; shift 2;;
    --out) OUT=$2; shift 2;;
    -h|--help) sed -n '2,12p' "$0"; exit 0;;
    *) echo "unknown argument $1" >&2; exit 2;;
  esac
done
CORPUS_ROOT=${CORPUS_ROOT:-/tmp/pluto-bench}
export WORKDIR=${WORKDIR:-$CORPUS_ROOT/run}
OUT=${OUT:-$CORPUS_ROOT/compare-$(date +%Y%m%d-%H%M%S).tsv}
mkdir -p "$CORPUS_ROOT"

# 1. Tools: restic and GNU time from Debian if missing.
need=()
command -v restic >/dev/null || need+=(restic)
[ -x /usr/bin/time ] || need+=(time)
if [ ${#need[@]} -gt 0 ]; then
  echo "== installing ${need[*]}" >&2
  SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "${need[@]}" >&2
fi
echo "== $(restic version)" >&2

# 2. pluto, release build.
if [ -z "${PLUTO:-}" ]; then
  echo "== building pluto (release)" >&2
  (cd "$ROOT" && cargo build --release -q -p pluto)
  PLUTO=${CARGO_TARGET_DIR:-$ROOT/target}/release/pluto
fi
export PLUTO=$(realpath "$PLUTO")
echo "== $PLUTO" >&2

# 3. Corpora (deterministic; `mixed` is checked against its known fingerprint).
for c in $CORPORA; do
  if [ ! -d "$CORPUS_ROOT/$c" ] || [ -z "$(ls -A "$CORPUS_ROOT/$c")" ]; then
    echo "== generating the $c corpus in $CORPUS_ROOT/$c" >&2
    python3 "$HERE/compare/make-corpus.py" "$c" "$CORPUS_ROOT/$c" >&2
  fi
done
if [[ " $CORPORA " == *" mixed "* ]]; then
  fp=$(python3 "$HERE/compare/make-corpus.py" manifest "$CORPUS_ROOT/mixed" | tail -1)
  case $fp in
    *f50b1a95a5eed17ecb44ca371b3ac9e07b4ec7ffcf651ab624134ba85c816765*) ;;
    *) echo "warning: $CORPUS_ROOT/mixed is not the reference corpus ($fp)" >&2;;
  esac
fi

# 4. Interleaved cycles.
tools=(pluto restic)
for rep in $(seq 1 "$REPS"); do
  for c in $CORPORA; do
    for i in 0 1; do
      t=${tools[$(((i + rep - 1) % 2))]}
      echo "== $(date +%T) rep $rep/$REPS $c $t (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
      VERIFY=$([ "$rep" = 1 ] && echo 1 || echo 0) \
        "$HERE/compare/cycle.sh" "$t" "$CORPUS_ROOT/$c" "$OUT" "$rep"
    done
  done
done

# 5. Table.
echo "== raw results: $OUT" >&2
python3 "$HERE/compare/summarize.py" "$OUT"
