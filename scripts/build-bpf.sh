#!/usr/bin/env bash
# Rebuild the load-balancing eBPF object from its C source:
#
#   bash scripts/build-bpf.sh           # write crates/carpd/bpf/balance.bpf.o
#   bash scripts/build-bpf.sh --check   # rebuild into a temp file, fail unless identical
#
# The object is committed and embedded with include_bytes!, so `cargo build`
# never needs clang; --check (run by scripts/test-all.sh) proves the committed
# bytes are what this source and Debian 12's clang 14 + libbpf-dev produce.
# Reproducible by construction: no -g (no DWARF, no paths), legacy map
# definitions (no BTF needed), a relative source name and a fixed working
# directory; the only other input is the compiler.
set -euo pipefail
cd "$(dirname "$0")/../crates/carpd/bpf"

CLANG=${CLANG:-clang}
SRC=balance.bpf.c
OBJ=balance.bpf.o
# Debian keeps asm/types.h under the multiarch directory.
MULTIARCH=$(gcc -print-multiarch 2>/dev/null || echo "$(uname -m)-linux-gnu")

build() { # build OUT
    "$CLANG" -O2 -target bpf -Wall -Werror -I"/usr/include/$MULTIARCH" \
        ${BPF_CFLAGS:-} -c "$SRC" -o "$1"
}

if ! command -v "$CLANG" >/dev/null; then
    echo "build-bpf: $CLANG not found (apt-get install -y clang llvm libbpf-dev)" >&2
    exit 1
fi

case "${1:-}" in
--check)
    tmp=$(mktemp --suffix=.bpf.o)
    trap 'rm -f "$tmp"' EXIT
    build "$tmp"
    if cmp -s "$tmp" "$OBJ"; then
        echo "build-bpf: $OBJ matches $SRC ($("$CLANG" --version | head -1))"
    else
        echo "build-bpf: crates/carpd/bpf/$OBJ is NOT what $SRC builds to" >&2
        echo "build-bpf: run 'bash scripts/build-bpf.sh' and commit the object" >&2
        cmp "$tmp" "$OBJ" >&2 || true
        exit 1
    fi
    ;;
"")
    build "$OBJ"
    echo "build-bpf: wrote crates/carpd/bpf/$OBJ"
    ;;
*)
    echo "usage: $0 [--check]" >&2
    exit 2
    ;;
esac
