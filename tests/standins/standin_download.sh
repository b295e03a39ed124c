#!/bin/sh
# Test double for an archive client (ngasClient): slow copy from a local directory, logging
# start/end times. Usage: standin_download.sh LOG ARCHIVE_DIR FILE DEST [SECONDS] [FAIL_NAME]
log=$1 archive=$2 file=$3 dest=$4 seconds=${5:-0.5} fail=${6:-}
echo "start $file $(date +%s.%N)" >> "$log"
sleep "$seconds"
if [ -n "$fail" ] && [ "$file" = "$fail" ]; then
    echo "end $file $(date +%s.%N)" >> "$log"
    echo "HTTP 404 Not Found: $file is not in the archive" >&2
    exit 1
fi
cp "$archive/$file" "$dest.part" && mv "$dest.part" "$dest"
echo "end $file $(date +%s.%N)" >> "$log"
