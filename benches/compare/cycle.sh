#!/usr/bin/env bash
# One benchmark cycle of one tool on one corpus (adapted from shared/bench/run-bench.sh):
#   init, snapshot 1 (first), snapshot 2 (nothing changed), edit step, snapshot 3 (after
#   the edit), restore of the latest snapshot, check, check --read-data.
# Each phase runs under /usr/bin/time; one TSV line per phase is appended to RESULTS.
#
# Usage: cycle.sh pluto|restic CORPUS_DIR RESULTS_TSV [REP]
# Env: PLUTO (the pluto binary), WORKDIR (default /tmp/pluto-bench/run), VERIFY=1 to compare
#      the restored tree with the edited source (untimed).
set -euo pipefail
TOOL=$1; CORPUS=$(realpath "$2"); RESULTS=$3; REP=${4:-1}
HERE=$(cd "$(dirname "$0")" && pwd)
WORKDIR=${WORKDIR:-/tmp/pluto-bench/run}
PLUTO=${PLUTO:-pluto}
NAME=$(basename "$CORPUS")
SRC=$WORKDIR/$NAME
REPO=$WORKDIR/repo
DEST=$WORKDIR/restore
export RESTIC_PASSWORD=bench-passphrase RESTIC_CACHE_DIR=$WORKDIR/cache/restic

rm -rf "$WORKDIR"; mkdir -p "$WORKDIR/cache"
cp -a "$CORPUS" "$SRC"
sync

cmd_of() { # phase -> shell command
  case $TOOL:$1 in
    restic:init) echo 'restic init -r "$REPO"';;
    restic:backup*) echo 'restic -r "$REPO" backup --host bench "$SRC"';;
    restic:restore) echo 'restic -r "$REPO" restore latest --target "$DEST"';;
    restic:check) echo 'restic -r "$REPO" check';;
    restic:check_full) echo 'restic -r "$REPO" check --read-data';;
    pluto:init) echo '"$PLUTO" init --repo "$REPO" "$SRC"';;
    pluto:backup*) echo 'PLUTO_REPO="$REPO" "$PLUTO" snapshot --host bench "$SRC"';;
    pluto:restore) echo 'PLUTO_REPO="$REPO" "$PLUTO" checkout latest --target "$DEST"';;
    pluto:check) echo 'PLUTO_REPO="$REPO" "$PLUTO" check';;
    pluto:check_full) echo 'PLUTO_REPO="$REPO" "$PLUTO" check --read-data';;
    *) echo "unknown tool/phase $TOOL:$1" >&2; exit 2;;
  esac
}
restored_root() { case $TOOL in restic) echo "$DEST$SRC";; pluto) echo "$DEST";; esac; }
repo_bytes() { du -sb "$REPO" 2>/dev/null | cut -f1; }

run_phase() {
  local phase=$1 cmd tf=$WORKDIR/time.$1 log=$WORKDIR/log.$1
  cmd=$(cmd_of "$phase")
  export REPO SRC DEST PLUTO
  if ! /usr/bin/time -f '%e\t%M\t%U\t%S' -o "$tf" bash -c "$cmd" >"$log" 2>&1; then
    echo "FAILED: $TOOL $phase: $cmd" >&2; tail -20 "$log" >&2; exit 1
  fi
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$TOOL" "$NAME" "$REP" "$phase" "$(tail -1 "$tf")" \
    "$(repo_bytes)" "$(date +%s)" >>"$RESULTS"
  echo "  $TOOL $NAME rep$REP $phase: $(tail -1 "$tf" | cut -f1)s rss=$(tail -1 "$tf" | cut -f2)KB repo=$(repo_bytes)" >&2
}

[ -s "$RESULTS" ] || printf 'tool\tcorpus\trep\tphase\telapsed_s\tmaxrss_kb\tuser_s\tsys_s\trepo_bytes\tepoch\n' >"$RESULTS"
printf '%s\t%s\t%s\tsrc_bytes\t%s\t0\t0\t0\t0\t%s\n' "$TOOL" "$NAME" "$REP" "$(du -sb "$SRC" | cut -f1)" "$(date +%s)" >>"$RESULTS"
run_phase init
run_phase backup1
run_phase backup2
python3 "$HERE/make-corpus.py" edit "$SRC" >>"$WORKDIR/log.edit" 2>&1
sync
printf '%s\t%s\t%s\tsrc_bytes_edited\t%s\t0\t0\t0\t0\t%s\n' "$TOOL" "$NAME" "$REP" "$(du -sb "$SRC" | cut -f1)" "$(date +%s)" >>"$RESULTS"
run_phase backup3
# Let the writeback of the snapshot finish so it does not land on the restore's clock.
sync
run_phase restore
if [ "${VERIFY:-0}" = 1 ]; then
  if diff -r -q --no-dereference "$SRC" "$(restored_root)" >"$WORKDIR/log.verify" 2>&1; then
    echo "  $TOOL $NAME rep$REP verify: restored tree identical" >&2
  else
    echo "  $TOOL $NAME rep$REP verify: DIFFERENCES" >&2; head -20 "$WORKDIR/log.verify" >&2
    exit 1
  fi
fi
rm -rf "$DEST"; sync
run_phase check
run_phase check_full
rm -rf "$WORKDIR"
