#!/bin/bash
# Usage: redis_dump.sh PORT
# Prints the store's Redis state (prefix "mhs") in a normal form, for
# comparing two rebuilds of the same journal: keys sorted; hashes without
# their stream entry id; the delivery stream and the retry schedule as one
# sorted list of the message ids they queue (a due retry moves from one to
# the other at any time, and a replay reschedules in-flight messages from
# "now"); expiries as "expires"/"persist", not times.
set -euo pipefail
R=(redis-cli -h 127.0.0.1 -p "$1" --raw)
"${R[@]}" --scan --pattern 'mhs:*' | LC_ALL=C sort | while read -r key; do
	case "$key" in
	mhs:applied_seq:* | mhs:rebuild:* | mhs:deliver | mhs:retry) continue ;;
	esac
	type=$("${R[@]}" TYPE "$key")
	ttl=$("${R[@]}" PTTL "$key")
	[ "$ttl" = -1 ] && ttl=persist || ttl=expires
	echo "== $key $type $ttl"
	case "$type" in
	string) "${R[@]}" GET "$key" ;;
	hash) "${R[@]}" HGETALL "$key" | paste - - | grep -v '^entry	' |
		LC_ALL=C sort ;;
	zset) "${R[@]}" ZRANGE "$key" 0 -1 WITHSCORES | paste - - ;;
	list) "${R[@]}" LRANGE "$key" 0 -1 ;;
	esac
done
echo "== queued (stream and retry schedule)"
{
	printf 'MULTI\nXRANGE mhs:deliver - +\nZRANGE mhs:retry 0 -1\nEXEC\n' |
		"${R[@]}" | grep -E '^[0-9A-F]{8}-' || true
} | LC_ALL=C sort
