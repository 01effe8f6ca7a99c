#!/usr/bin/env bash
# Run every cargo-fuzz target for SECONDS each (default 20), starting from the
# checked-in seeds in fuzz/seeds/<target> plus whatever fuzz/corpus/<target>
# has collected. Fails if any target finds a crash; the reproducer is left in
# fuzz/artifacts/<target>/ (turn it into a regression test, see
# docs/reliability.md).
#
#   bash scripts/fuzz-ci.sh            # CI: 20 s per target
#   bash scripts/fuzz-ci.sh 3600       # the long run: one hour per target
#   FUZZ_TARGETS="carp_datagram" bash scripts/fuzz-ci.sh 600
#   FUZZ_SANITIZER=none bash scripts/fuzz-ci.sh   # no AddressSanitizer
#
# Works on a stable toolchain: cargo-fuzz passes -Z flags to rustc, which
# stable accepts with RUSTC_BOOTSTRAP=1 (set here). Installs cargo-fuzz with
# `cargo install` when it is missing.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-20}
sanitizer=${FUZZ_SANITIZER:-address}
targets=${FUZZ_TARGETS:-"carp_datagram config_toml config_words control_request solicitation_frame vrrp_advert"}

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

cargo fmt --check
export RUSTC_BOOTSTRAP=1
cargo fuzz build -s "$sanitizer"

failed=()
for t in $targets; do
    mkdir -p "corpus/$t"
    echo "=== fuzz $t for ${seconds}s"
    # The first directory collects new inputs; the seeds are read only.
    if ! cargo fuzz run -s "$sanitizer" "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 2>"corpus/$t.log"; then
        tail -n 40 "corpus/$t.log"
        if ls "artifacts/$t"/* >/dev/null 2>&1; then
            failed+=("$t (crash)")
        else
            failed+=("$t (did not run, see above)")
        fi
    else
        grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "corpus/$t.log" || true
    fi
done

if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz targets failed: ${failed[*]}; reproducers of crashes are in fuzz/artifacts/"
    exit 1
fi
echo "fuzz: no crashes in ${seconds}s per target"
