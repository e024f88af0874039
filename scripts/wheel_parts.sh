# shellcheck shell=bash
# Sourced by the scripts that make wheel sets for the lent GPU machine (gpu_wheels.sh, fa4_wheels.sh,
# repack_ray.sh). A call to that machine carries at most 64 MiB: the checkout (tracked and untracked,
# not ignored files) plus the carried paths. So a set is tarred and the tar cut into parts, DEST/1/,
# DEST/2/, ..., each holding NAME.tar.NN and NAME.sha256 (the tar's sum and `parts N`), carried one a
# call (or beside other sets' parts while they fit) and joined there by scripts/stage_wheels.sh. A set
# small enough to travel whole is one part of the same layout, so that one script installs them all.
# Expects to run from the repository root.

mib=$((1024 * 1024))
call_limit=$((64 * mib))
# Room for the checkout to grow before the parts need cutting again (REPACK=1 re-cuts, downloading nothing).
call_margin=$((3 * mib))

checkout_bytes() {  # what travels with every call: tracked and untracked, not ignored files
  # A tracked file deleted from the work tree does not travel: stat's complaint about it is dropped.
  git ls-files -z --cached --others --exclude-standard \
    | { xargs -0 -r stat --printf '%s\n' -- 2>/dev/null || true; } \
    | awk '{total += $1} END {print total + 0}'
}

in_mib() { awk -v bytes="$1" 'BEGIN {printf "%.1f MiB", bytes / 1048576}'; }

pack_wheels() {  # pack_wheels NAME WHEELS DEST: the wheels in folder WHEELS as parts DEST/1/, DEST/2/, ...
  local name=$1 wheels=$2 dest=$3 checkout part_mb tar sum parts i size
  checkout=$(checkout_bytes)
  # $PART_MB, else the largest whole MiB that fits one call beside the checkout with the margin to spare.
  part_mb=${PART_MB:-$(((call_limit - call_margin - checkout) / mib))}
  [ "$part_mb" -gt 0 ] || { echo "error: the checkout ($(in_mib "$checkout")) leaves no room for a part" >&2; return 1; }
  [ -n "$(find "$wheels" -maxdepth 1 -name '*.whl' -print -quit)" ] || { echo "error: no wheels in $wheels" >&2; return 1; }

  rm -rf "$dest"/[0-9]*/ "$dest/$name".tar*  # what an earlier packing left
  mkdir -p "$dest"
  tar=$dest/$name.tar
  find "$wheels" -maxdepth 1 -name '*.whl' -printf '%f\0' | sort -z | tar -cf "$tar" -C "$wheels" --null -T -
  split -b "${part_mb}M" -d -a 2 "$tar" "$tar."
  sum=$(sha256sum "$tar" | cut -d' ' -f1)
  rm "$tar"
  parts=$(find "$dest" -maxdepth 1 -name "$name.tar.[0-9][0-9]" | wc -l)
  echo "$name: $parts part(s) of at most $part_mb MiB; the checkout is $(in_mib "$checkout"), a call carries $(in_mib "$call_limit")"
  for ((i = 1; i <= parts; i++)); do
    mkdir "$dest/$i"
    mv "$(printf '%s.%02d' "$tar" $((i - 1)))" "$dest/$i/"
    printf '%s  %s.tar\nparts %s\n' "$sum" "$name" "$parts" > "$dest/$i/$name.sha256"
    size=$(du -sb "$dest/$i" | cut -f1)
    echo "  $dest/$i: $(in_mib "$size"), $(in_mib $((checkout + size))) with the checkout"
    [ $((checkout + size)) -lt "$call_limit" ] || echo "warning: $dest/$i does not fit one call; pack again with a smaller PART_MB" >&2
  done
}
