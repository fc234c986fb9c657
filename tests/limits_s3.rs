//! Store limits caught while planning, multipart uploads of large
//! documents, and foreign keys that the S3 client library cannot parse.

mod common;

use std::process::Command;

use common::{run_expect, Fixture};

#[test]
fn limit_long_key_refused() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "limit-key");
        fx.repo.write("keep.md", "# Keep\n");
        fx.repo.commit("one");
        run_expect(&mut fx.cmd("apply", &["--yes"]), 0);
        let before = runtime.block_on(fx.bucket.list(&fx.prefix));

        // Folders of 200 bytes each, so that the key passes 1,024 bytes
        // while every path segment stays under file system limits.
        let folder = "f".repeat(200);
        let long = format!("{folder}/{folder}/{folder}/{folder}/{folder}/long.md");
        fx.repo.write(&long, "# Long\n");
        fx.repo.write("new.md", "# New\n");
        fx.repo.commit("two");

        for command in ["plan", "apply"] {
            let args: &[&str] = if command == "apply" { &["--yes"] } else { &[] };
            let refused = run_expect(&mut fx.cmd(command, args), 1);
            assert!(
                refused.stderr.contains(&format!("{long}: key is")),
                "{}",
                refused.stderr
            );
            assert!(
                refused.stderr.contains("limit of 1024"),
                "{}",
                refused.stderr
            );
        }
        assert_eq!(runtime.block_on(fx.bucket.list(&fx.prefix)), before);
    }
}

#[test]
fn limit_control_character_refused() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "limit-control");
        fx.repo.write("tab\there.md", "# Tab\n");
        fx.repo.write("fine.md", "# Fine\n");
        fx.repo.commit("one");
        let refused = run_expect(&mut fx.cmd("apply", &["--yes"]), 1);
        assert!(
            refused.stderr.contains("tab\\there.md"),
            "{}",
            refused.stderr
        );
        assert!(
            refused.stderr.contains("rename the file"),
            "{}",
            refused.stderr
        );
        assert!(runtime.block_on(fx.bucket.list(&fx.prefix)).is_empty());
    }
}

#[test]
fn multipart_equal_parts() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "multipart");
        // 12 MiB and a bit: parts of 5 MiB, 5 MiB and the rest.
        let body = format!("# Big\n\n{}\n", "lorem ipsum ".repeat(1_100_000));
        fx.repo.write("big.md", &body);
        fx.repo.write("small.md", "# Small\n");
        let commit = fx.repo.commit("one");
        let options = [
            "--max-document-size",
            "33554432",
            "--multipart-threshold",
            "5242880",
            "--part-size",
            "5242880",
        ];
        let mut args = vec!["--yes"];
        args.extend_from_slice(&options);
        run_expect(&mut fx.cmd("apply", &args), 0);

        // The big document is a three-part object with the exact bytes; the
        // small one is a single PUT.
        let listed = runtime.block_on(fx.bucket.list(&fx.prefix));
        let big = &listed[&fx.key("big.md")];
        assert!(
            big.etag
                .as_deref()
                .is_some_and(|etag| etag.trim_matches('"').ends_with("-3")),
            "{}: ETag {:?}",
            server.name,
            big.etag
        );
        assert_eq!(
            runtime.block_on(fx.bucket.get(&fx.key("big.md"))),
            body.as_bytes()
        );
        let small = &listed[&fx.key("small.md")];
        assert!(!small.etag.as_deref().unwrap_or_default().contains('-'));
        let metadata = runtime.block_on(fx.bucket.metadata(&fx.key("big.md")));
        assert!(metadata.contains_key("r2sync-hash"), "{metadata:?}");

        // Nothing is left to do, and check agrees.
        let mut again = vec!["--yes", "--json"];
        again.extend_from_slice(&options);
        let result = run_expect(&mut fx.cmd("apply", &again), 0);
        let result: serde_json::Value = serde_json::from_str(&result.stdout).unwrap();
        assert_eq!(common::writes(&result), 0, "{result}");
        let mut check = vec!["--ref", commit.as_str()];
        check.extend_from_slice(&options);
        run_expect(&mut fx.cmd("check", &check), 0);

        // No upload is left open.
        let open = list_multipart_uploads(&server, &fx.prefix);
        assert!(open.is_empty(), "{}: open uploads {open:?}", server.name);
    }
}

/// Runs a short boto3 script (boto3 comes with moto) against `server` with
/// `s3` bound to a client; prints what the script prints.
fn boto3(server: &common::Server, script: &str) -> String {
    let program = format!(
        "import boto3, json, sys\n\
         from botocore.config import Config\n\
         s3 = boto3.client('s3', endpoint_url={endpoint:?}, region_name={region:?},\n\
             aws_access_key_id={key:?}, aws_secret_access_key={secret:?},\n\
             config=Config(s3={{'addressing_style': 'path'}}))\n\
         bucket = {bucket:?}\n{script}\n",
        endpoint = server.endpoint,
        region = server.region,
        key = server.access_key_id,
        secret = server.secret_access_key,
        bucket = server.bucket,
    );
    let output = Command::new("python3")
        .arg("-c")
        .arg(program)
        .env("NO_PROXY", "127.0.0.1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .expect("running python3");
    assert!(
        output.status.success(),
        "boto3 script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn list_multipart_uploads(server: &common::Server, prefix: &str) -> Vec<String> {
    let script = format!(
        "uploads = s3.list_multipart_uploads(Bucket=bucket, Prefix={prefix:?}).get('Uploads', [])\n\
         print(json.dumps([u['Key'] for u in uploads]))"
    );
    serde_json::from_str(boto3(server, &script).trim()).unwrap()
}

#[test]
fn foreign_unparseable_keys_unmanaged() {
    for server in common::servers() {
        let fx = Fixture::new(&server, "foreign-keys");
        fx.repo.write("a.md", "# A\n");
        fx.repo.commit("one");
        run_expect(&mut fx.cmd("apply", &["--yes"]), 0);

        // Another writer puts keys that object_store rejects or rewrites.
        let awkward = [
            format!("{}/x//y.md", fx.prefix),
            format!("{}/x/../y.md", fx.prefix),
            format!("{}/folder/", fx.prefix),
        ];
        let script = format!(
            "for key in {awkward:?}:\n    s3.put_object(Bucket=bucket, Key=key, Body=b'foreign')\n\
             print(json.dumps(sorted(o['Key'] for o in s3.list_objects_v2(Bucket=bucket, Prefix={prefix:?})['Contents'])))",
            prefix = fx.prefix
        );
        let stored: Vec<String> = serde_json::from_str(boto3(&server, &script).trim()).unwrap();
        let present: Vec<&String> = awkward.iter().filter(|key| stored.contains(key)).collect();
        assert!(
            !present.is_empty(),
            "{}: server kept none of {awkward:?}: {stored:?}",
            server.name
        );

        // Plan lists them as unmanaged, apply and check work around them.
        let plan = run_expect(&mut fx.cmd("plan", &["--json"]), 0);
        let plan: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
        let unmanaged: Vec<&str> = plan["unmanaged"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key.as_str().unwrap())
            .collect();
        for key in &present {
            assert!(
                unmanaged.contains(&key.as_str()),
                "{key} not in {unmanaged:?}"
            );
        }
        fx.repo.write("b.md", "# B\n");
        let second = fx.repo.commit("two");
        run_expect(&mut fx.cmd("apply", &["--yes"]), 0);
        run_expect(&mut fx.cmd("check", &["--ref", &second]), 0);

        // They are still there: r2sync never touches what it did not write.
        let after: Vec<String> = serde_json::from_str(
            boto3(
                &server,
                &format!(
                    "print(json.dumps(sorted(o['Key'] for o in s3.list_objects_v2(Bucket=bucket, Prefix={:?})['Contents'])))",
                    fx.prefix
                ),
            )
            .trim(),
        )
        .unwrap();
        for key in &present {
            assert!(after.contains(key), "{key} was removed");
        }
        assert!(after.contains(&fx.key("b.md")), "{after:?}");
    }
}
