"""Run a command and write its own peak RSS (kB), CPU seconds and 512-byte blocks written to FILE.

    python3 -S -I bench/peak_rss.py FILE COMMAND [ARG...]

A child's ru_maxrss starts from the RSS of the process that forked it (the kernel carries the
old memory's high-water mark across exec), so a command spawned by a 40 MB benchmark never
reads below 40 MB. Forked from this small interpreter instead (started with -S -I: no site,
about 8 MB), the command's figure is its own. stdin, stdout and stderr pass straight through;
the exit code is the command's (128 + N for a signal N).
"""

import os
import sys


def main() -> int:
    if len(sys.argv) < 3:
        sys.stderr.write(__doc__)
        return 2
    out, cmd = sys.argv[1], sys.argv[2:]
    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(cmd[0], cmd)
        finally:
            os._exit(127)
    _, status, ru = os.wait4(pid, 0)
    with open(out, "w", encoding="ascii") as fh:
        fh.write(f"{ru.ru_maxrss} {ru.ru_utime + ru.ru_stime:.3f} {ru.ru_oublock}\n")
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


if __name__ == "__main__":
    raise SystemExit(main())
