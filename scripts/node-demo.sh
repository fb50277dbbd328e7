#!/bin/bash
# A user starts the node and does nothing else. Needs: pluto and pluto-coordinator built.
PLUTO=${PLUTO:-$(cd "$(dirname "$0")/.." && pwd)/target/debug/pluto}
COORD=${COORD:-$(dirname "$PLUTO")/pluto-coordinator}
B=${B:-/tmp/node-demo}
rm -rf $B; mkdir -p $B; cd $B
$COORD --data $B/coord --listen 127.0.0.1:0 > coord.log 2>&1 &
echo $! > pids
for i in $(seq 1 30); do grep -q '^mqtt ' coord.log && break; sleep 1; done
URL=$(grep '^mqtt ' coord.log | head -1 | awk '{print $2}')
echo "coordinator at $URL"
for i in $(seq 1 ${HOSTS:-11}); do
  mkdir h$i; (cd h$i && $PLUTO init >/dev/null 2>&1 && exec $PLUTO serve --coordinator $URL --listen 127.0.0.1:0 --offer 1G --snapshot-every 0 --push-every 0 --challenge-every 0 > serve.log 2>&1) &
  echo $! >> pids
done
sleep 5
mkdir -p me/docs; echo "hello" > me/docs/letter.txt; head -c 3000000 /dev/urandom > me/photo.raw
cd me && $PLUTO init 2>&1 | grep -v -i "word\|^ *[0-9]" | head -3
echo "\$ pluto serve --coordinator $URL --offer 1G --snapshot-every 10 --challenge-every 5 --host-grace 15 --notify-cmd 'cat >> ../alerts.jsonl'"
timeout ${T:-60} $PLUTO serve --coordinator $URL --listen 127.0.0.1:0 --offer 1G --snapshot-every 10 --challenge-every 5 --host-grace 15 --notify-every 1 --notify-cmd "cat >> ../alerts.jsonl" 2>&1 &
NODE=$!
sleep ${KILL_AFTER:-25}
echo "--- (another shell) \$ pluto log | head -3; pluto status | head -4"
$PLUTO log 2>&1 | head -3; $PLUTO status 2>&1 | head -4
echo "--- killing 3 hosts that hold shares"
n=0; for i in $(seq 1 ${HOSTS:-11}); do
  if [ -d ../h$i/.pluto/hosted/*/shares ] 2>/dev/null && [ $n -lt 3 ]; then pid=$(sed -n "$((i+1))p" ../pids); pkill -P $pid 2>/dev/null; kill $pid 2>/dev/null; n=$((n+1)); echo "killed h$i"; fi
done
echo "--- (another shell, every 5 s) \$ pluto status | head -1"
for i in $(seq 1 ${POLLS:-8}); do sleep 5; echo "[+$((i*5)) s] $($PLUTO status 2>&1 | head -1)"; done
wait $NODE
echo "--- alerts.jsonl"; cat ../alerts.jsonl
echo "--- \$ pluto status | head -4"; $PLUTO status 2>&1 | head -4
for p in $(cat ../pids); do pkill -P $p 2>/dev/null; kill $p 2>/dev/null; done
