#!/usr/bin/env bash
# Builds the release tarball an operator publishes in their own artifact store and the Marathon
# app definitions fetch (config/marathon/*.json):
#
#   target/dist/switchyard-<version>-<target>.tar.gz          the archive
#   target/dist/switchyard-<version>-<target>.tar.gz.sha256   its SHA-256, in sha256sum's format
#
# The archive holds one directory, switchyard-<version>-<target>/, with the binary, the example
# configurations (config/), the systemd unit, shell completions and man pages. It is
# reproducible: the same binary gives the same bytes (sorted names, fixed owner and mtime,
# gzip without a timestamp), so a digest pinned in an app definition stays valid for a rebuild.
#
# Usage: packaging/build-tarball.sh [--binary PATH] [--out-dir DIR]
#   --binary PATH   package this binary instead of building `cargo build --release`
#   --out-dir DIR   where to write the archive and its checksum (default target/dist)
# Prints the archive's path and its SHA-256 (the value for SWITCHYARD_SHA256 in the app
# definitions).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=""
out=target/dist
while [ $# -gt 0 ]; do
  case "$1" in
    --binary) bin="$2"; shift 2 ;;
    --out-dir) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "build-tarball.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ -z "$bin" ]; then
  cargo build --release --locked
  bin=target/release/switchyard
fi
# `switchyard 0.1.0 (rev)`: the version the binary reports is the one the name carries.
version=$("$bin" --version | awk '{ print $2 }')
target=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')
target=${target:-$(uname -m)-unknown-linux-gnu}
name="switchyard-$version-$target"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
root="$stage/$name"
mkdir -p "$root/config/marathon" "$root/systemd" "$root/completions" "$root/man"
install -m 0755 "$bin" "$root/switchyard"
install -m 0644 config/switchyard.toml config/apps.json "$root/config/"
install -m 0644 config/marathon/*.json config/marathon/*.toml "$root/config/marathon/"
install -m 0644 config/systemd/switchyard.service "$root/systemd/"
install -m 0644 README.md "$root/"
"$bin" completions bash > "$root/completions/switchyard.bash"
"$bin" completions zsh > "$root/completions/_switchyard"
"$bin" completions fish > "$root/completions/switchyard.fish"
"$bin" man --out-dir "$root/man" >/dev/null
gzip -9n "$root"/man/*.1
mkdir -p "$out"
archive="$out/$name.tar.gz"
# The commit's time when there is one, so a rebuild of the same commit is byte-identical.
epoch=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$epoch" \
  -C "$stage" -cf - "$name" | gzip -9n > "$archive"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "$archive"
cut -d' ' -f1 "$archive.sha256"
