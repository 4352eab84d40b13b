# Source this before running cargo by hand: `. scripts/env.sh`.
# The tvm-ffi crate's build script runs `tvm-ffi-config`, which lives in the project's venv.
_spacetune_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
case ":$PATH:" in
    *":$_spacetune_root/.deps/venv/bin:"*) ;;
    *) export PATH="$_spacetune_root/.deps/venv/bin:$PATH" ;;
esac
unset _spacetune_root
