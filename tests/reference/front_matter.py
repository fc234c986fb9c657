"""Parse every Markdown file below a directory with python-frontmatter and
print one JSON line per file: its path, the front matter, and the body.

Dates and times become ISO 8601 strings so that the output is JSON. Run by
tests/front_matter_reference.rs; needs `pip install python-frontmatter`.
"""

import datetime
import json
import os
import sys

import frontmatter


def to_json(value):
    if isinstance(value, (datetime.date, datetime.datetime, datetime.time)):
        return value.isoformat()
    raise TypeError(f"cannot convert {type(value).__name__} to JSON")


def main(root):
    for directory, _, names in os.walk(root):
        if ".git" in directory.split(os.sep):
            continue
        for name in names:
            if not name.lower().endswith((".md", ".markdown")):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, root).replace(os.sep, "/")
            with open(path, "rb") as file:
                raw = file.read()
            try:
                metadata, content = frontmatter.parse(raw.decode("utf-8-sig"))
                record = {"path": relative, "front_matter": metadata, "body": content}
            except Exception as error:  # reported per file, compared by the test
                record = {"path": relative, "error": f"{type(error).__name__}: {error}"}
            print(json.dumps(record, default=to_json, ensure_ascii=False))


if __name__ == "__main__":
    main(sys.argv[1])
