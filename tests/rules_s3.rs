//! Configuration-file features against the real S3 servers: per-path rules,
//! key mapping, front matter fields in metadata, drafts and the catalog.

mod common;

use common::{run_expect, writes, Fixture};
use object_store::Attribute;

fn write_config(fx: &Fixture, text: &str) {
    std::fs::write(fx.workdir.path().join("r2sync.toml"), text).unwrap();
}

fn plan_json(fx: &Fixture, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let result = run_expect(&mut fx.cmd("plan", &all), 0);
    serde_json::from_str(&result.stdout).unwrap()
}

fn changes(plan: &serde_json::Value) -> Vec<(String, String, String)> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|change| {
            (
                change["key"].as_str().unwrap().to_string(),
                change["action"].as_str().unwrap().to_string(),
                change["reason"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[test]
fn header_rule_change_updates_only_matching_objects() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "header-rule");
        fx.repo.write("blog/a.md", "# A\n");
        fx.repo.write("blog/b.md", "# B\n");
        fx.repo.write("guide/c.md", "# C\n");
        fx.repo.commit("one");
        write_config(
            &fx,
            "[[rules]]\nmatch = \"**\"\ncontent-language = \"en\"\n\n[[rules]]\nmatch = \"blog/**\"\ncache-control = \"max-age=60\"\ncontent-disposition = \"inline\"\n",
        );
        fx.apply_json(&[]);

        let blog = runtime.block_on(fx.bucket.attributes(&fx.key("blog/a.md")));
        assert_eq!(
            blog.get(&Attribute::CacheControl)
                .map(|v| v.to_string())
                .as_deref(),
            Some("max-age=60"),
            "{}",
            server.name
        );
        assert_eq!(
            blog.get(&Attribute::ContentDisposition)
                .map(|v| v.to_string())
                .as_deref(),
            Some("inline")
        );
        assert_eq!(
            blog.get(&Attribute::ContentLanguage)
                .map(|v| v.to_string())
                .as_deref(),
            Some("en")
        );
        let guide = runtime.block_on(fx.bucket.attributes(&fx.key("guide/c.md")));
        assert_eq!(guide.get(&Attribute::CacheControl), None, "{}", server.name);

        // Only the header rule changes: the blog objects update for headers.
        write_config(
            &fx,
            "[[rules]]\nmatch = \"**\"\ncontent-language = \"en\"\n\n[[rules]]\nmatch = \"blog/**\"\ncache-control = \"max-age=300\"\ncontent-disposition = \"inline\"\n",
        );
        let plan = plan_json(&fx, &[]);
        assert_eq!(
            changes(&plan),
            vec![
                (fx.key("blog/a.md"), "update".into(), "headers".into()),
                (fx.key("blog/b.md"), "update".into(), "headers".into()),
            ],
            "{}",
            server.name
        );
        let result = fx.apply_json(&[]);
        assert_eq!(result["updated"], 2, "{result}");
        let blog = runtime.block_on(fx.bucket.attributes(&fx.key("blog/b.md")));
        assert_eq!(
            blog.get(&Attribute::CacheControl)
                .map(|v| v.to_string())
                .as_deref(),
            Some("max-age=300")
        );
        assert_eq!(writes(&fx.apply_json(&[])), 0);
    }
}

#[test]
fn key_mapping_and_collisions() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "key-mapping");
        fx.repo.write("guide/index.md", "# Guide\n");
        fx.repo.write("guide/install.md", "# Install\n");
        fx.repo.write("about.md", "# About\n");
        fx.repo.commit("one");
        write_config(
            &fx,
            "[[rules]]\nmatch = \"**\"\nextension = \"drop\"\nindex-to-directory = true\n\n[[rules]]\nmatch = \"about.md\"\nextension = \".txt\"\n",
        );
        fx.apply_json(&[]);
        assert_eq!(
            runtime.block_on(fx.bucket.document_keys(&fx.prefix)),
            vec![
                fx.key("about.txt"),
                fx.key("guide"),
                fx.key("guide/install")
            ],
            "{}",
            server.name
        );

        // Two sources that map to one key stop the plan, naming both.
        fx.repo.write("guide/install.markdown", "# Install again\n");
        fx.repo.commit("two");
        let result = run_expect(&mut fx.cmd("plan", &[]), 1);
        assert!(
            result
                .stderr
                .contains("guide/install.markdown and guide/install.md")
                || result
                    .stderr
                    .contains("guide/install.md and guide/install.markdown"),
            "{}",
            result.stderr
        );
    }
}

#[test]
fn front_matter_fields_drafts_and_metadata_limit() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "front-matter");
        fx.repo.write(
            "post.md",
            "---\ntitle: Post\nauthor: Zoë Doe\ndate: 2024-02-29\ntags: [rust, docs]\n---\nText.\n",
        );
        fx.repo.write(
            "draft.md",
            "---\ntitle: Draft\ndraft: true\n---\nNot yet.\n",
        );
        fx.repo.commit("one");
        write_config(
            &fx,
            "skip-drafts = true\n\n[front-matter.metadata]\nauthor = \"author\"\ndate = \"published\"\ntags = \"tags\"\n",
        );
        fx.apply_json(&[]);

        assert_eq!(
            runtime.block_on(fx.bucket.document_keys(&fx.prefix)),
            vec![fx.key("post.md")],
            "{}",
            server.name
        );
        let metadata = runtime.block_on(fx.bucket.metadata(&fx.key("post.md")));
        assert_eq!(
            r2sync::remote::metadata::decode(&metadata["author"]),
            "Zoë Doe",
            "{}",
            server.name
        );
        assert_eq!(metadata["published"], "2024-02-29");
        assert_eq!(metadata["tags"], "rust, docs");
        assert_eq!(metadata["r2sync-words"], "1");

        // A mapped field that pushes metadata past the limit stops the plan.
        fx.repo.write(
            "post.md",
            format!(
                "---\ntitle: Post\nauthor: \"{}\"\n---\nText.\n",
                "a".repeat(2000)
            ),
        );
        fx.repo.commit("two");
        let result = run_expect(&mut fx.cmd("plan", &[]), 1);
        assert!(
            result.stderr.contains("post.md: user metadata is"),
            "{}",
            result.stderr
        );
        assert!(result.stderr.contains("limit of 2048"), "{}", result.stderr);
    }
}

#[test]
fn catalog_tracks_documents() {
    let runtime = common::runtime();
    for server in common::servers() {
        let fx = Fixture::new(&server, "catalog");
        fx.repo.write("a.md", "---\ntitle: Alpha\ndescription: First doc\n---\n# Alpha\n\n## Part\n\nSome words here.\n");
        fx.repo.write("b.md", "# Beta\n\nMore.\n");
        fx.repo.commit("one");
        let result = fx.apply_json(&["--catalog", "catalog.jsonl"]);
        assert_eq!(result["created"], 3, "{result}");

        let body = runtime.block_on(fx.bucket.get(&fx.key("catalog.jsonl")));
        let lines: Vec<serde_json::Value> = String::from_utf8(body)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines.len(), 2, "{}", server.name);
        assert_eq!(lines[0]["key"], fx.key("a.md"));
        assert_eq!(lines[0]["path"], "a.md");
        assert_eq!(lines[0]["title"], "Alpha");
        assert_eq!(lines[0]["description"], "First doc");
        assert_eq!(lines[0]["word_count"], 5);
        assert_eq!(
            lines[0]["headings"],
            serde_json::json!([{"level": 1, "text": "Alpha"}, {"level": 2, "text": "Part"}])
        );
        assert_eq!(lines[0]["front_matter"]["title"], "Alpha");
        let a_metadata = runtime.block_on(fx.bucket.metadata(&fx.key("a.md")));
        assert_eq!(lines[0]["body_hash"], a_metadata["r2sync-body"]);
        assert_eq!(
            runtime
                .block_on(fx.bucket.content_type(&fx.key("catalog.jsonl")))
                .as_deref(),
            Some("application/x-ndjson; charset=utf-8")
        );

        // Unchanged sources leave the catalog alone; an edit updates both.
        assert_eq!(writes(&fx.apply_json(&["--catalog", "catalog.jsonl"])), 0);
        fx.repo.write("b.md", "# Beta\n\nEdited.\n");
        fx.repo.commit("two");
        let plan = plan_json(&fx, &["--catalog", "catalog.jsonl"]);
        assert_eq!(
            changes(&plan),
            vec![
                (fx.key("b.md"), "update".into(), "content".into()),
                (fx.key("catalog.jsonl"), "update".into(), "content".into()),
            ],
            "{}",
            server.name
        );
    }
}
