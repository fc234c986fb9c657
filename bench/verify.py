#!/usr/bin/env python3
"""Desired states and bucket checks for bench/compare.sh.

Subcommands:

  manifest  Write the regular files of a commit (path, size, MD5) as JSON.
  expect    Print the changes between two manifests that a sync must make.
  bucket    Compare the objects under a prefix with a manifest; exit 1 if
            they differ.
  plan      Compare the summary of an `r2sync plan --json` output with the
            expected changes; exit 1 if they differ.

The bucket is read with boto3 (path-style addressing) at the endpoint given,
with the credentials and region from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
and AWS_REGION.
"""

import argparse
import hashlib
import json
import subprocess
import sys

# Default include globs of r2sync (`r2sync plan --help`), matched
# case-insensitively. Every other file is left out of its desired state.
MARKDOWN_SUFFIXES = (".md", ".markdown")

# Git modes of regular files. Symbolic links (120000) and submodules (160000)
# are left out, because the peers run with symlinks not followed.
REGULAR_FILE_MODES = ("100644", "100755")

# Prefix of the keys that r2sync writes for itself below the target prefix,
# such as the state manifest, the lock and archives. They are not documents.
R2SYNC_INTERNAL_PREFIX = ".r2sync/"


def git_tree_blobs(git_dir, commit, root):
    """Return {path below root: blob id} for the regular files of commit."""
    command = ["git", "--git-dir", git_dir, "ls-tree", "-r", "-z", "--full-tree", commit]
    if root:
        command += ["--", root + "/"]
    output = subprocess.run(command, check=True, capture_output=True).stdout
    prefix = root + "/" if root else ""
    blobs = {}
    for entry in output.split(b"\0"):
        if not entry:
            continue
        meta, path = entry.split(b"\t", 1)
        mode, kind, blob_id = meta.decode().split(" ")
        path = path.decode("utf-8", "surrogateescape")
        if kind != "blob" or mode not in REGULAR_FILE_MODES:
            continue
        blobs[path[len(prefix):]] = blob_id
    return blobs


def read_blobs(git_dir, blob_ids):
    """Yield (blob id, content) for each id, read with one `git cat-file --batch`."""
    process = subprocess.Popen(
        ["git", "--git-dir", git_dir, "cat-file", "--batch"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    # Send one id and read its response before the next, so neither pipe fills up.
    for blob_id in blob_ids:
        process.stdin.write(blob_id.encode() + b"\n")
        process.stdin.flush()
        header = process.stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            raise SystemExit(f"git cat-file returned {header!r} for blob {blob_id}")
        size = int(header[2])
        content = process.stdout.read(size)
        process.stdout.read(1)  # the line feed after the content
        yield blob_id, content
    process.stdin.close()
    if process.wait() != 0:
        raise SystemExit("git cat-file --batch failed")


def command_manifest(args):
    blobs = git_tree_blobs(args.git_dir, args.commit, args.root)
    digests = {}
    for blob_id, content in read_blobs(args.git_dir, sorted(set(blobs.values()))):
        digests[blob_id] = {"md5": hashlib.md5(content).hexdigest(), "size": len(content)}
    files = {path: dict(digests[blob_id], blob=blob_id) for path, blob_id in sorted(blobs.items())}
    with open(args.out, "w") as out:
        json.dump({"commit": args.commit, "root": args.root, "files": files}, out)


def is_markdown(path):
    return path.lower().endswith(MARKDOWN_SUFFIXES)


def select(files, kind):
    """Return the part of a manifest's files that a tool of this kind publishes."""
    if kind == "markdown":
        return {path: entry for path, entry in files.items() if is_markdown(path)}
    return files


def load_files(path, kind):
    with open(path) as manifest:
        return select(json.load(manifest)["files"], kind)


def changes_between(old, new):
    """Return (keys to write, keys to remove) to go from state old to state new."""
    written = sorted(path for path, entry in new.items() if old.get(path, {}).get("blob") != entry["blob"])
    removed = sorted(set(old) - set(new))
    return written, removed


def command_expect(args):
    result = {}
    for kind in ("raw", "markdown"):
        old = load_files(args.old, kind)
        new = load_files(args.new, kind)
        written, removed = changes_between(old, new)
        result[kind] = {
            "files_old": len(old),
            "files_new": len(new),
            "written": len(written),
            "removed": len(removed),
        }
    json.dump(result, sys.stdout, indent=1)
    print()


def list_bucket(endpoint, bucket, prefix):
    """Return {key below prefix: (ETag without quotes, size)}."""
    import boto3
    from botocore.config import Config

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    prefix = prefix.rstrip("/") + "/"
    objects = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            objects[item["Key"][len(prefix):]] = (item["ETag"].strip('"'), item["Size"])
    return objects


def command_bucket(args):
    desired = load_files(args.manifest, args.kind)
    objects = list_bucket(args.endpoint, args.bucket, args.prefix)
    if args.kind == "markdown":
        objects = {key: value for key, value in objects.items() if not key.startswith(R2SYNC_INTERNAL_PREFIX)}

    missing = sorted(set(desired) - set(objects))
    extra = sorted(set(objects) - set(desired))
    # r2sync uploads normalized bytes, so only the raw kind compares content.
    # For r2sync, compare.sh runs `r2sync check`, which compares its content.
    mismatched = []
    if args.kind == "raw":
        mismatched = sorted(
            key
            for key in set(desired) & set(objects)
            if objects[key][0] != desired[key]["md5"] or objects[key][1] != desired[key]["size"]
        )

    correct = not (missing or extra or mismatched)
    report = {
        "correct": correct,
        "expected": len(desired),
        "found": len(objects),
        "missing": len(missing),
        "extra": len(extra),
        "mismatched": len(mismatched),
        "examples": (missing[:3] + extra[:3] + mismatched[:3]),
    }
    json.dump(report, sys.stdout)
    print()
    return 0 if correct else 1


def command_plan(args):
    with open(args.expect) as expect_file:
        expected = json.load(expect_file)["markdown"]
    with open(args.plan) as plan_file:
        summary = json.load(plan_file)["summary"]
    written = summary["create"] + summary["update"]
    removed = summary["delete"] + summary["archive"]
    correct = written == expected["written"] and removed == expected["removed"]
    report = {
        "correct": correct,
        "planned_writes": written,
        "expected_writes": expected["written"],
        "planned_removals": removed,
        "expected_removals": expected["removed"],
    }
    json.dump(report, sys.stdout)
    print()
    return 0 if correct else 1


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)

    manifest = commands.add_parser("manifest", help="write the regular files of a commit as JSON")
    manifest.add_argument("--git-dir", required=True)
    manifest.add_argument("--commit", required=True)
    manifest.add_argument("--root", default="", help="folder of the commit whose contents map to keys")
    manifest.add_argument("--out", required=True)

    expect = commands.add_parser("expect", help="print the changes from one manifest to another")
    expect.add_argument("--old", required=True)
    expect.add_argument("--new", required=True)

    bucket = commands.add_parser("bucket", help="compare a prefix with a manifest")
    bucket.add_argument("--manifest", required=True)
    bucket.add_argument("--kind", choices=["raw", "markdown"], required=True,
                        help="raw: every file, same key set and MD5; markdown: r2sync's key set only")
    bucket.add_argument("--endpoint", required=True)
    bucket.add_argument("--bucket", required=True)
    bucket.add_argument("--prefix", required=True)

    plan = commands.add_parser("plan", help="compare an r2sync plan summary with the expected changes")
    plan.add_argument("--plan", required=True, help="output of r2sync plan --json")
    plan.add_argument("--expect", required=True, help="output of the expect subcommand")

    args = parser.parse_args()
    handlers = {
        "manifest": command_manifest,
        "expect": command_expect,
        "bucket": command_bucket,
        "plan": command_plan,
    }
    sys.exit(handlers[args.command](args) or 0)


if __name__ == "__main__":
    main()
