#!/bin/sh
# Stand-in for a pipeline recipe in the benchmarks (not a product path): notes its start and
# end in TIMES (one write per line), sleeps SECONDS, and writes the AB's PRODUCTS (their
# $DFS_PRODUCT paths expanded; not empty, since abflow does not count an empty product)
# unless a DETECTOR is given (a detector job's pieces are joined by the AB's own job, which
# writes the products).
#   standin.sh TIMES AB_FILE SECONDS [DETECTOR]
times=$1 ab_file=$2 seconds=$3 det=${4:-}
name=$(basename "$ab_file")
echo "start $name${det:+.$det} $(date +%s.%N)" >> "$times"
sleep "$seconds"
if [ -z "$det" ]; then
    sed -n 's/^PRODUCTS[[:space:]]*\([^[:space:]]*\).*/\1/p' "$ab_file" |
        sed "s#\$DFS_PRODUCT#$DFS_PRODUCT#" |
        while read -r product; do
            mkdir -p "$(dirname "$product")" && echo standin > "$product"
        done
fi
echo "end $name${det:+.$det} $(date +%s.%N)" >> "$times"
