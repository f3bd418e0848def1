#!/bin/sh
# Runs a test under Valgrind's memcheck, which must report nothing: an
# error, a leak or any other message fails the test. Without valgrind the
# test is skipped (exit 77, SKIP_RETURN_CODE), not passed.
if ! command -v valgrind >/dev/null 2>&1; then
    echo "SKIPPED: valgrind is not installed" >&2
    exit 77
fi
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
# One log per process: the tests fork.
valgrind --quiet --error-exitcode=99 --leak-check=full --show-leak-kinds=all \
    --errors-for-leak-kinds=all --log-file="$dir/log.%p" "$@"
rc=$?
cat "$dir"/log.* >&2
# Valgrind before 3.20 does not know epoll_pwait2 (syscall 441) and says
# so; the epoll backend then falls back to epoll_pwait. Nothing else may
# be said.
if grep -v -h -e 'unhandled amd64-linux syscall: 441$' -e 'write your own handler' \
        -e 'README_MISSING_SYSCALL_OR_IOCTL' -e 'we consider this a bug' \
        -e 'valgrind.org/support/bug_reports' "$dir"/log.* | grep -q .; then
    echo "valgrind reported the above" >&2
    [ "$rc" -ne 0 ] || rc=98
fi
exit "$rc"
