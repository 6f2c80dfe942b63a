"""Print the `pip:` list of environment.yml, one requirement a line (no PyYAML needed).

environment.yml stays the single list of dependencies; the Makefile feeds this output to pip.
"""
import sys
from pathlib import Path


def pip_requirements(text: str) -> list[str]:
    reqs, in_pip, pip_indent = [], False, 0
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        item = line.strip()
        if item == "- pip:":
            in_pip, pip_indent = True, indent
            continue
        if in_pip:
            if indent <= pip_indent:
                in_pip = False
            elif item.startswith("- "):
                reqs.append(item[2:].strip())
    if not reqs:
        raise SystemExit("environment.yml has no `pip:` list")
    return reqs


if __name__ == "__main__":
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "environment.yml")
    print("\n".join(pip_requirements(path.read_text())))
