//! The source stage: a commit of a Git repository, read through git2 from the
//! object database. Nothing is checked out, so file modes and mtimes of a
//! work tree never influence what is published.

use std::collections::HashMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use git2::{ObjectType, Oid, Repository, TreeWalkMode, TreeWalkResult};
use globset::{GlobBuilder, GlobSet, GlobSetBuilder};

/// The globs used when the user gives no `--include`.
pub const DEFAULT_INCLUDE: &[&str] = &["*.md", "*.markdown"];

/// Errors of the source stage. Each names the repository, ref or path.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot open repository {repo}: {}; {}", source.message(), open_hint(source))]
    Open { repo: String, source: git2::Error },
    #[error("cannot read bundle {path}: {message}")]
    Bundle { path: String, message: String },
    #[error("cannot fetch {url}: authentication failed (tried: {tried}); for HTTPS set R2SYNC_GIT_TOKEN (and R2SYNC_GIT_USERNAME if the server needs a user) or configure a git credential helper, for SSH set R2SYNC_SSH_KEY or load the key into ssh-agent")]
    Auth { url: String, tried: String },
    #[error("cannot fetch {url}: {}{}", source.message(), fetch_hint(source))]
    Fetch { url: String, source: git2::Error },
    #[error("cannot resolve ref {reference:?} in {repo}: {}; pass a branch, tag or commit id with --ref", source.message())]
    Ref {
        reference: String,
        repo: String,
        source: git2::Error,
    },
    #[error("--root {root:?} is not a directory in commit {commit}")]
    Root { root: String, commit: String },
    #[error("invalid glob {glob:?}: {source}")]
    Glob {
        glob: String,
        source: globset::Error,
    },
    #[error("path {path} in commit {commit} is not valid UTF-8; rename it, or pass --skip-invalid-paths")]
    NonUtf8Path { path: String, commit: String },
    #[error("cannot read {path} (blob {blob}): {}", source.message())]
    Blob {
        path: String,
        blob: String,
        source: git2::Error,
    },
    #[error("{repo} is a bare repository and has no work tree; drop --worktree")]
    Bare { repo: String },
    #[error("git error: {}", .0.message())]
    Git(#[from] git2::Error),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

/// Returns advice for a failed fetch, when there is a known fix.
fn fetch_hint(error: &git2::Error) -> &'static str {
    if error.message().contains("hostkey") {
        "; add the server's key to ~/.ssh/known_hosts, for example with `ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts`"
    } else {
        ""
    }
}

/// Returns the fix for a repository that cannot be opened.
fn open_hint(error: &git2::Error) -> &'static str {
    if error.message().contains("not owned by current user") {
        // libgit2 applies git's safe.directory rule to repositories of
        // other users, and honors the same configuration.
        "run r2sync as the repository's owner, or mark it safe with `git config --global --add safe.directory PATH`"
    } else {
        "pass a repository directory, a bundle file or a URL with --repo"
    }
}

/// Include and exclude globs, matched case-insensitively against the path
/// below the root.
pub struct Selector {
    include: GlobSet,
    exclude: GlobSet,
}

impl Selector {
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, SourceError> {
        Ok(Selector {
            include: build_globset(include)?,
            exclude: build_globset(exclude)?,
        })
    }

    /// Tells whether `path` is published. An exclude glob that matches a
    /// folder of the path (`drafts`, `fixtures/markdown`) excludes it too.
    pub fn matches(&self, path: &str) -> bool {
        if !self.include.is_match(path) || self.exclude.is_match(path) {
            return false;
        }
        let mut folders = path.match_indices('/').map(|(index, _)| &path[..index]);
        !folders.any(|folder| self.exclude.is_match(folder))
    }
}

fn build_globset(globs: &[String]) -> Result<GlobSet, SourceError> {
    let mut builder = GlobSetBuilder::new();
    for glob in globs {
        let compiled = GlobBuilder::new(glob)
            .case_insensitive(true)
            .build()
            .map_err(|source| SourceError::Glob {
                glob: glob.clone(),
                source,
            })?;
        builder.add(compiled);
    }
    builder.build().map_err(|source| SourceError::Glob {
        glob: globs.join(","),
        source,
    })
}

/// An opened repository together with what keeps it alive (a temporary
/// directory for an imported bundle).
pub struct Repo {
    pub repo: Repository,
    /// The repository as the user named it, with credentials removed.
    pub display: String,
    _scratch: Option<tempfile::TempDir>,
}

/// One selected file of the commit.
#[derive(Clone, Debug)]
pub struct SourceFile {
    /// Path below the root, with `/` separators; this becomes the key suffix.
    pub path: String,
    /// Path from the top of the repository, for messages and metadata.
    pub repo_path: String,
    /// Git blob id of the content (computed, not stored, for work tree files).
    pub blob: Oid,
    /// The content is read from the work tree, not from the object database.
    pub from_worktree: bool,
}

/// Opens `spec`: a local repository (bare or with a work tree), a bundle
/// file, or a URL that is cloned into `cache_dir` and fetched on later runs.
pub fn open(spec: &str, cache_dir: &Path) -> Result<Repo, SourceError> {
    let local = Path::new(spec);
    if local.is_file() {
        return import_bundle(local);
    }
    if is_url(spec) {
        return open_remote(spec, cache_dir);
    }

    let repo = Repository::discover(local).map_err(|source| SourceError::Open {
        repo: spec.to_string(),
        source,
    })?;
    Ok(Repo {
        repo,
        display: spec.to_string(),
        _scratch: None,
    })
}

fn is_url(spec: &str) -> bool {
    if spec.contains("://") {
        return true;
    }
    // scp-like syntax: user@host:path
    match (spec.find('@'), spec.find(':')) {
        (Some(at), Some(colon)) => at < colon && !spec[..colon].contains('/'),
        _ => false,
    }
}

/// Removes a user name and password from a URL before it is shown or stored.
pub fn redact_url(spec: &str) -> String {
    match url::Url::parse(spec) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => spec.to_string(),
    }
}

/// Clones a remote as a bare mirror under the cache directory, or fetches
/// into the existing mirror.
fn open_remote(url: &str, cache_dir: &Path) -> Result<Repo, SourceError> {
    let display = redact_url(url);
    let dir = cache_dir
        .join("repos")
        .join(&blake3::hash(url.as_bytes()).to_hex()[..16]);
    let fetch_error = |source| SourceError::Fetch {
        url: display.clone(),
        source,
    };

    // One run at a time creates or fetches into a mirror; a second run
    // waits for the lock, then fetches what is new.
    fs::create_dir_all(dir.parent().expect("cache path has a parent")).map_err(|source| {
        SourceError::Io {
            context: format!("cannot create cache directory {}", cache_dir.display()),
            source,
        }
    })?;
    let lock_path = dir.with_extension("lock");
    let lock = fs::File::create(&lock_path).map_err(|source| SourceError::Io {
        context: format!("cannot create lock file {}", lock_path.display()),
        source,
    })?;
    lock.lock().map_err(|source| SourceError::Io {
        context: format!("cannot lock {}", lock_path.display()),
        source,
    })?;

    let repo = match Repository::open_bare(&dir) {
        Ok(repo) => repo,
        Err(_) => {
            fs::create_dir_all(&dir).map_err(|source| SourceError::Io {
                context: format!("cannot create cache directory {}", dir.display()),
                source,
            })?;
            Repository::init_bare(&dir).map_err(fetch_error)?
        }
    };

    let shown_url = &display;
    tracing::info!(url = %shown_url, cache = %dir.display(), "fetching remote repository");
    {
        let mut remote = repo.remote_anonymous(url).map_err(fetch_error)?;
        let tried = std::cell::RefCell::new(Vec::new());
        let mut fetch_options = git2::FetchOptions::new();
        fetch_options.remote_callbacks(credential_callbacks(&repo, &tried));
        let fetched = remote.fetch(
            &["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
            Some(&mut fetch_options),
            None,
        );
        drop(fetch_options);
        if let Err(source) = fetched {
            let tried = tried.into_inner();
            // The server asked for credentials (a method was tried) and the
            // fetch failed, or libgit2 reports an authentication error.
            if !tried.is_empty() || source.code() == git2::ErrorCode::Auth {
                return Err(SourceError::Auth {
                    url: display.clone(),
                    tried: if tried.is_empty() {
                        "none was available".to_string()
                    } else {
                        tried.join(", ")
                    },
                });
            }
            return Err(fetch_error(source));
        }
        if let Ok(default_branch) = remote.default_branch() {
            if let Ok(name) = default_branch.as_str() {
                repo.set_head(name).map_err(fetch_error)?;
            }
        }
    }
    // Reading objects needs no lock: a later fetch only adds objects.
    drop(lock);

    Ok(Repo {
        repo,
        display,
        _scratch: None,
    })
}

/// Variable with an HTTPS token (a personal access token or similar).
pub const GIT_TOKEN_VAR: &str = "R2SYNC_GIT_TOKEN";
/// Variable with the user name sent with the token (default `git`).
pub const GIT_USERNAME_VAR: &str = "R2SYNC_GIT_USERNAME";
/// Variable with the path of an SSH private key.
pub const SSH_KEY_VAR: &str = "R2SYNC_SSH_KEY";

/// Credentials for fetching: an HTTPS token from the environment, then git
/// credential helpers; for SSH a key file from the environment, then the
/// SSH agent. Each method is offered once, and `tried` records them by name
/// for the error message. No secret is logged.
fn credential_callbacks<'a>(
    repo: &'a Repository,
    tried: &'a std::cell::RefCell<Vec<String>>,
) -> git2::RemoteCallbacks<'a> {
    use git2::{Cred, CredentialType};

    let mut callbacks = git2::RemoteCallbacks::new();
    callbacks.credentials(move |url, username_from_url, allowed| {
        let mut tried = tried.borrow_mut();
        let mut offer = |name: &str| -> bool {
            // A method offered before was rejected by the server.
            if let Some(previous) = tried.iter_mut().find(|method| method.as_str() == name) {
                previous.push_str(" (rejected)");
                return false;
            }
            if tried.iter().any(|method| method.starts_with(name)) {
                return false;
            }
            tried.push(name.to_string());
            true
        };

        if allowed.contains(CredentialType::USER_PASS_PLAINTEXT) {
            if let Ok(token) = std::env::var(GIT_TOKEN_VAR) {
                if offer(&format!("HTTPS token from {GIT_TOKEN_VAR}")) {
                    let user = std::env::var(GIT_USERNAME_VAR)
                        .ok()
                        .or(username_from_url.map(str::to_string))
                        .unwrap_or_else(|| "git".to_string());
                    return Cred::userpass_plaintext(&user, &token);
                }
            }
            if offer("git credential helper") {
                if let Ok(config) = repo.config() {
                    if let Ok(cred) = Cred::credential_helper(&config, url, username_from_url) {
                        return Ok(cred);
                    }
                }
            }
        }
        if allowed.contains(CredentialType::SSH_KEY) {
            let user = username_from_url.unwrap_or("git");
            if let Ok(key) = std::env::var(SSH_KEY_VAR) {
                if offer(&format!("SSH key from {SSH_KEY_VAR}")) {
                    return Cred::ssh_key(user, None, std::path::Path::new(&key), None);
                }
            }
            if offer("SSH agent") {
                return Cred::ssh_key_from_agent(user);
            }
        }
        if allowed.contains(CredentialType::USERNAME) {
            return Cred::username(username_from_url.unwrap_or("git"));
        }
        Err(git2::Error::from_str("no more credentials to try"))
    });
    callbacks
}

/// Imports a Git bundle (format v2 or v3) into a temporary bare repository:
/// the pack goes through libgit2's pack writer, the header's refs become
/// branches and tags, and HEAD follows the bundle's HEAD line.
fn import_bundle(path: &Path) -> Result<Repo, SourceError> {
    let display = path.display().to_string();
    let bundle_error = |message: String| SourceError::Bundle {
        path: display.clone(),
        message,
    };
    let io_error = |source: std::io::Error| SourceError::Bundle {
        path: display.clone(),
        message: source.to_string(),
    };

    let file = fs::File::open(path).map_err(io_error)?;
    let mut reader = BufReader::new(file);

    // Header: a signature line, optional capabilities (v3), prerequisites
    // (`-<oid>`), then `<oid> <refname>` lines and a blank line.
    let mut signature = String::new();
    reader.read_line(&mut signature).map_err(io_error)?;
    let signature = signature.trim_end();
    if signature != "# v2 git bundle" && signature != "# v3 git bundle" {
        return Err(bundle_error(format!(
            "not a Git bundle (first line {signature:?}); pass a repository directory, a bundle or a URL"
        )));
    }

    let mut refs: Vec<(Oid, String)> = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).map_err(io_error)? == 0 {
            return Err(bundle_error("header ends before the pack".into()));
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if line.starts_with('@') {
            continue;
        }
        if line.starts_with('-') {
            return Err(bundle_error(
                "the bundle is incremental (it has prerequisites); create it with `git bundle create FILE --all`".into(),
            ));
        }
        let (oid, name) = line
            .split_once(' ')
            .ok_or_else(|| bundle_error(format!("invalid ref line {line:?}")))?;
        let oid = Oid::from_str(oid).map_err(|err| bundle_error(err.to_string()))?;
        refs.push((oid, name.to_string()));
    }

    let scratch = tempfile::Builder::new()
        .prefix("r2sync-bundle-")
        .tempdir()
        .map_err(io_error)?;
    let repo = Repository::init_bare(scratch.path())?;

    // Stream the pack into the object database.
    {
        let odb = repo.odb()?;
        let mut writer = odb.packwriter()?;
        let mut buffer = vec![0u8; 1 << 16];
        loop {
            let read = reader.read(&mut buffer).map_err(io_error)?;
            if read == 0 {
                break;
            }
            writer.write_all(&buffer[..read]).map_err(io_error)?;
        }
        writer.commit()?;
    }

    // Recreate the refs, then point HEAD where the bundle's HEAD pointed.
    let mut head = None;
    for (oid, name) in &refs {
        if name == "HEAD" {
            head = Some(*oid);
            continue;
        }
        repo.reference(name, *oid, true, "r2sync: import bundle")?;
    }
    if let Some(head) = head {
        let branch = refs
            .iter()
            .find(|(oid, name)| *oid == head && name.starts_with("refs/heads/"));
        match branch {
            Some((_, name)) => repo.set_head(name)?,
            None => repo.set_head_detached(head)?,
        }
    }

    let shown_path = &display;
    tracing::debug!(bundle = %shown_path, refs = refs.len(), "imported bundle");
    Ok(Repo {
        repo,
        display,
        _scratch: Some(scratch),
    })
}

/// Resolves a branch, tag, commit id or `HEAD` to a commit id.
pub fn resolve_commit(repo: &Repo, reference: &str) -> Result<Oid, SourceError> {
    let object = repo
        .repo
        .revparse_single(reference)
        .and_then(|object| object.peel_to_commit())
        .map_err(|source| SourceError::Ref {
            reference: reference.to_string(),
            repo: repo.display.clone(),
            source,
        })?;
    Ok(object.id())
}

/// Options for tree entries that cannot be published as they are.
#[derive(Clone, Copy, Debug, Default)]
pub struct SelectOptions {
    /// Skip paths that are not valid UTF-8 (with a warning) instead of failing.
    pub skip_invalid_paths: bool,
}

/// The selected files of a commit, and what the walk noticed.
#[derive(Debug, Default)]
pub struct Selection {
    /// Selected files sorted by path; a symbolic link to a selected file is
    /// listed under the link's path with the target's content.
    pub files: Vec<SourceFile>,
    /// Skipped submodules, symbolic links and invalid paths, each named.
    pub warnings: Vec<String>,
}

/// Maximum number of symbolic links followed in a chain to a file.
const MAX_LINK_HOPS: usize = 8;

/// Lists the files of `commit` below `root` that the selector accepts,
/// sorted by path.
pub fn select_files(
    repo: &Repo,
    commit: Oid,
    root: &str,
    selector: &Selector,
    options: SelectOptions,
) -> Result<Selection, SourceError> {
    let commit_object = repo.repo.find_commit(commit)?;
    let mut tree = commit_object.tree()?;
    let root = root.trim_matches('/');
    if !root.is_empty() {
        let entry = tree
            .get_path(Path::new(root))
            .map_err(|_| SourceError::Root {
                root: root.to_string(),
                commit: commit.to_string(),
            })?;
        tree = entry
            .to_object(&repo.repo)?
            .into_tree()
            .map_err(|_| SourceError::Root {
                root: root.to_string(),
                commit: commit.to_string(),
            })?;
    }
    let repo_path = |path: &str| {
        if root.is_empty() {
            path.to_string()
        } else {
            format!("{root}/{path}")
        }
    };

    // One walk collects regular files (all of them, because a link may
    // point at an unselected name), links and submodules.
    let mut selection = Selection::default();
    // Only selected files and links are kept, so memory follows the
    // selection, not the size of the tree.
    let mut blobs: HashMap<String, Oid> = HashMap::new();
    let mut links: Vec<(String, Oid)> = Vec::new();
    let mut failure = None;
    let walked = tree.walk(TreeWalkMode::PreOrder, |dir, entry| {
        let Ok(name) = entry.name() else {
            // Bytes that are not UTF-8 are shown as \xNN escapes.
            let shown = format!("{dir}{}", entry.name_bytes().escape_ascii());
            if options.skip_invalid_paths {
                selection.warnings.push(format!(
                    "{}: the path is not valid UTF-8, so it is skipped",
                    repo_path(&shown)
                ));
                return TreeWalkResult::Skip;
            }
            failure = Some(SourceError::NonUtf8Path {
                path: repo_path(&shown),
                commit: commit.to_string(),
            });
            return TreeWalkResult::Abort;
        };
        let path = format!("{dir}{name}");
        match entry.kind() {
            Some(ObjectType::Blob) if !selector.matches(&path) => {}
            Some(ObjectType::Blob) if entry.filemode() == 0o120000 => {
                links.push((path, entry.id()));
            }
            Some(ObjectType::Blob) => {
                blobs.insert(path, entry.id());
            }
            Some(ObjectType::Commit) => {
                selection.warnings.push(format!(
                    "{}: submodule skipped; its files are not part of this repository",
                    repo_path(&path)
                ));
            }
            _ => {}
        }
        TreeWalkResult::Ok
    });
    // Aborting the walk makes libgit2 report a user error; the reason is
    // in `failure`.
    if let Some(failure) = failure {
        return Err(failure);
    }
    walked?;

    for (path, blob) in blobs {
        selection.files.push(SourceFile {
            repo_path: repo_path(&path),
            path,
            blob,
            from_worktree: false,
        });
    }

    // A link is published with its target's content when the target is a
    // file inside the tree below the root. Targets are looked up on demand.
    links.sort();
    for (path, link_blob) in links {
        match resolve_link(repo, &tree, &path, link_blob) {
            Ok(blob) => selection.files.push(SourceFile {
                repo_path: repo_path(&path),
                path,
                blob,
                from_worktree: false,
            }),
            Err(target) => {
                selection.warnings.push(format!(
                "{}: symbolic link to {target} skipped; it points outside {} or to a missing file",
                repo_path(&path),
                if root.is_empty() { "the repository" } else { "--root" }
            ))
            }
        }
    }

    selection.files.sort_by(|a, b| a.path.cmp(&b.path));
    for warning in &selection.warnings {
        tracing::warn!("{warning}");
    }
    Ok(selection)
}

/// Follows a symbolic link, and links it points at, to a regular file of
/// `tree`, or returns the link text it could not follow.
fn resolve_link(
    repo: &Repo,
    tree: &git2::Tree<'_>,
    path: &str,
    link_blob: Oid,
) -> Result<Oid, String> {
    let mut current_path = path.to_string();
    let mut current_blob = link_blob;
    for _ in 0..MAX_LINK_HOPS {
        let text = repo
            .repo
            .find_blob(current_blob)
            .map(|blob| String::from_utf8_lossy(blob.content()).into_owned())
            .map_err(|_| format!("{current_path:?} (unreadable link)"))?;
        let target = join_link(&current_path, &text).ok_or_else(|| format!("{text:?}"))?;
        let entry = tree
            .get_path(Path::new(&target))
            .map_err(|_| format!("{text:?}"))?;
        match (entry.kind(), entry.filemode()) {
            (Some(ObjectType::Blob), 0o120000) => {
                current_path = target;
                current_blob = entry.id();
            }
            (Some(ObjectType::Blob), _) => return Ok(entry.id()),
            _ => return Err(format!("{text:?}")),
        }
    }
    Err(format!(
        "{path:?} (more than {MAX_LINK_HOPS} links in a chain)"
    ))
}

/// Resolves link text relative to the link's folder; `None` when it leaves
/// the tree or is absolute.
fn join_link(link_path: &str, text: &str) -> Option<String> {
    if text.starts_with('/') {
        return None;
    }
    let mut parts: Vec<&str> = link_path.split('/').collect();
    parts.pop();
    for segment in text.trim_end_matches('\n').split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// Lists the files of the work tree below `root` that the selector accepts:
/// tracked files as they are on disk (uncommitted edits included) and
/// untracked files that .gitignore does not exclude, sorted by path.
/// Deleted files are left out. Nothing is written to the repository.
pub fn select_worktree_files(
    repo: &Repo,
    root: &str,
    selector: &Selector,
) -> Result<Selection, SourceError> {
    let workdir = repo.repo.workdir().ok_or_else(|| SourceError::Bare {
        repo: repo.display.clone(),
    })?;
    let root = root.trim_matches('/');
    let prefix = if root.is_empty() {
        String::new()
    } else {
        format!("{root}/")
    };

    // Tracked paths from the index, plus untracked ones git would add.
    let mut paths: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    let index = repo.repo.index()?;
    for entry in index.iter() {
        if let Ok(path) = std::str::from_utf8(&entry.path) {
            paths.insert(path.to_string());
        }
    }
    let mut options = git2::StatusOptions::new();
    options
        .include_untracked(true)
        .recurse_untracked_dirs(true)
        .include_ignored(false);
    for status in repo.repo.statuses(Some(&mut options))?.iter() {
        if let Ok(path) = status.path() {
            if status.status().contains(git2::Status::WT_NEW) {
                paths.insert(path.to_string());
            }
        }
    }

    let mut selection = Selection::default();
    for repo_path in paths {
        let Some(path) = repo_path.strip_prefix(&prefix) else {
            continue;
        };
        if !selector.matches(path) {
            continue;
        }
        let full = workdir.join(&repo_path);
        match fs::symlink_metadata(&full) {
            Ok(metadata) if metadata.is_file() => {
                let blob = Oid::hash_file(ObjectType::Blob, &full)?;
                selection.files.push(SourceFile {
                    path: path.to_string(),
                    repo_path: repo_path.clone(),
                    blob,
                    from_worktree: true,
                });
            }
            Ok(metadata) if metadata.file_type().is_symlink() => selection.warnings.push(format!(
                "{repo_path}: symbolic link skipped in a work tree preview"
            )),
            // Deleted in the work tree: not part of the preview.
            _ => {}
        }
    }
    for warning in &selection.warnings {
        tracing::warn!("{warning}");
    }
    Ok(selection)
}

/// First line of every Git LFS pointer file.
const LFS_POINTER_START: &[u8] = b"version https://git-lfs.github.com/spec/v1\n";

/// Tells whether a blob is a Git LFS pointer: a small text file that starts
/// with the LFS specification line and names an object id.
pub fn is_lfs_pointer(content: &[u8]) -> bool {
    content.len() < 1024
        && content.starts_with(LFS_POINTER_START)
        && content.windows(11).any(|window| window == b"oid sha256:")
}

/// Reads the content of one selected file.
pub fn read_blob(repo: &Repo, file: &SourceFile) -> Result<Vec<u8>, SourceError> {
    if file.from_worktree {
        let workdir = repo
            .repo
            .workdir()
            .expect("work tree files come from a work tree");
        let path = workdir.join(&file.repo_path);
        return fs::read(&path).map_err(|source| SourceError::Io {
            context: format!("cannot read {}", path.display()),
            source,
        });
    }
    let blob = repo
        .repo
        .find_blob(file.blob)
        .map_err(|source| SourceError::Blob {
            path: file.repo_path.clone(),
            blob: file.blob.to_string(),
            source,
        })?;
    Ok(blob.content().to_vec())
}

/// Returns the default cache directory for fetched repositories.
pub fn default_cache_dir() -> PathBuf {
    dirs::cache_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("r2sync")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_selector_is_case_insensitive() {
        let globs: Vec<String> = DEFAULT_INCLUDE
            .iter()
            .map(|glob| glob.to_string())
            .collect();
        let selector = Selector::new(&globs, &[]).unwrap();
        assert!(selector.matches("a/b/README.MD"));
        assert!(selector.matches("guide.Markdown"));
        assert!(!selector.matches("image.png"));
        assert!(!selector.matches("page.mdx"));
    }

    #[test]
    fn exclude_wins_over_include() {
        let selector = Selector::new(&["*.md".into()], &["drafts/**".into()]).unwrap();
        assert!(selector.matches("docs/a.md"));
        assert!(!selector.matches("drafts/a.md"));

        let folder = Selector::new(&["*.md".into()], &["fixtures/markdown".into()]).unwrap();
        assert!(!folder.matches("fixtures/markdown/a.md"));
        assert!(folder.matches("fixtures/other/a.md"));
    }

    #[test]
    fn link_text_resolves_inside_the_tree() {
        assert_eq!(join_link("docs/a.md", "b.md").as_deref(), Some("docs/b.md"));
        assert_eq!(
            join_link("docs/sub/a.md", "../b.md").as_deref(),
            Some("docs/b.md")
        );
        assert_eq!(join_link("a.md", "../outside.md"), None);
        assert_eq!(join_link("a.md", "/etc/passwd"), None);
    }

    #[test]
    fn url_detection() {
        assert!(is_url("https://example.invalid/repo.git"));
        assert!(is_url("git@example.invalid:team/repo.git"));
        assert!(!is_url("./repo"));
        assert!(!is_url("/srv/a:b/repo"));
    }

    #[test]
    fn redact_removes_credentials() {
        assert_eq!(
            redact_url("https://user:s3cret@example.invalid/r.git"),
            "https://example.invalid/r.git"
        );
    }
}
