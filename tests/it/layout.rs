//! The documentation cannot drift from the tree: ARCHITECTURE.md's map names every file under
//! `src/`, and nothing that is not in the repository; every relative link of the repository's
//! Markdown pages leads to a file that exists and, with `#anchor`, to one of its headings.
//!
//! The map's grammar (ARCHITECTURE.md, "The map"): in its first `text` block, a line that
//! starts at the first column names a folder (ending in `/`); a line indented by exactly two
//! spaces names files of that folder (several separated by `, `), its description after two
//! spaces or more; a line indented further continues a description.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// What a map names, each path relative to the repository.
#[derive(Debug, Default, PartialEq)]
struct Map {
    folders: Vec<String>,
    files: Vec<String>,
}

/// The map of an ARCHITECTURE.md: its "The map" section's first `text` block, parsed.
fn map_of(architecture: &str) -> Result<Map, String> {
    let section = format!("\n{architecture}");
    let section = section
        .split("\n## ")
        .find(|s| s.starts_with("The map\n"))
        .ok_or("no \"## The map\" section")?;
    let block = section
        .split("```text\n")
        .nth(1)
        .and_then(|b| b.split("\n```").next())
        .ok_or("no text block in \"The map\"")?;
    let mut map = Map::default();
    let mut folder: Option<String> = None;
    for (n, line) in block.lines().enumerate() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        let names = line.trim_start().split("  ").next().unwrap_or("");
        match indent {
            _ if line.trim().is_empty() => {}
            0 if names.ends_with('/') => {
                map.folders.push(names.to_owned());
                folder = Some(names.to_owned());
            }
            0 => return Err(format!("map line {}: {names:?} is not a folder", n + 1)),
            2 => {
                let folder = folder
                    .as_ref()
                    .ok_or(format!("map line {}: a file before any folder", n + 1))?;
                for name in names.split(", ") {
                    map.files.push(format!("{folder}{name}"));
                }
            }
            _ => {}
        }
    }
    Ok(map)
}

fn architecture_map() -> Map {
    map_of(&read(&root().join("ARCHITECTURE.md")))
        .unwrap_or_else(|e| panic!("ARCHITECTURE.md: {e}"))
}

/// Every file under `dir`, as a path relative to the repository, with `/` between parts.
fn files_under(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_under(&path, out);
        } else {
            let relative = path.strip_prefix(root()).unwrap();
            out.insert(relative.to_string_lossy().replace('\\', "/"));
        }
    }
}

#[test]
fn a_map_names_folders_at_the_start_of_a_line_and_their_files_indented_by_two() {
    let text = "# A\n\n## The map\n\n```text\nsrc/           the crate\n  main.rs        the binary,\n                 described on two lines\n  a.rs, b/c.rs   two files\nsrc/x/\n  mod.rs\n```\n\n## Next\n\n```text\nlater/\n  ignored.rs\n```\n";
    let map = map_of(text).unwrap();
    assert_eq!(map.folders, ["src/", "src/x/"]);
    assert_eq!(
        map.files,
        ["src/main.rs", "src/a.rs", "src/b/c.rs", "src/x/mod.rs"]
    );
    let not_a_folder = "## The map\n\n```text\nsrc/main.rs   the binary\n```\n";
    assert!(map_of(not_a_folder).unwrap_err().contains("not a folder"));
    let orphan = "## The map\n\n```text\n  main.rs   the binary\n```\n";
    assert!(map_of(orphan).unwrap_err().contains("before any folder"));
}

#[test]
fn the_architecture_map_names_every_file_under_src() {
    let named: BTreeSet<String> = architecture_map().files.into_iter().collect();
    let mut tree = BTreeSet::new();
    files_under(&root().join("src"), &mut tree);
    let missing: Vec<_> = tree.difference(&named).collect();
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's map does not name {missing:?}: give each a line under its folder"
    );
}

#[test]
fn everything_the_architecture_map_names_is_in_the_tree_once() {
    let map = architecture_map();
    let gone: Vec<_> = (map.files.iter())
        .filter(|f| !root().join(f).is_file())
        .chain(map.folders.iter().filter(|d| !root().join(d).is_dir()))
        .collect();
    assert!(
        gone.is_empty(),
        "ARCHITECTURE.md's map names {gone:?}, which the tree does not have"
    );
    let mut seen = BTreeSet::new();
    let twice: Vec<_> = (map.files.iter().chain(&map.folders))
        .filter(|p| !seen.insert(*p))
        .collect();
    assert!(twice.is_empty(), "the map names {twice:?} twice");
}

/// The repository's Markdown pages (not those of dependencies or build output).
fn markdown_pages() -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" && name != "node_modules" {
                    walk(&path, out);
                }
            } else if name.ends_with(".md") {
                out.push(path);
            }
        }
    }
    let mut pages = Vec::new();
    walk(root(), &mut pages);
    pages.sort();
    pages
}

/// The lines of a page outside fenced code blocks.
fn prose(text: &str) -> Vec<&str> {
    let mut fenced = false;
    let mut lines = Vec::new();
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        } else if !fenced {
            lines.push(line);
        }
    }
    lines
}

/// The targets of `[text](target)` and `![alt](target)` links in a line, inline code left out.
fn link_targets(line: &str) -> Vec<String> {
    let mut outside = String::new();
    for (i, part) in line.split('`').enumerate() {
        if i % 2 == 0 {
            outside.push_str(part);
        }
    }
    let mut targets = Vec::new();
    let mut rest = outside.as_str();
    while let Some(at) = rest.find("](") {
        rest = &rest[at + 2..];
        if let Some(end) = rest.find(')') {
            targets.push(rest[..end].trim().to_owned());
            rest = &rest[end..];
        }
    }
    targets
}

/// The anchors GitHub makes of a page's headings: lowercased, spaces as `-`, punctuation other
/// than `-` and `_` dropped, a repeated one numbered `-1`, `-2`, ...
fn anchors(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in prose(text) {
        if !line.starts_with('#') {
            continue;
        }
        let Some(title) = line.trim_start_matches('#').strip_prefix(' ') else {
            continue;
        };
        let slug: String = (title.trim().chars())
            .filter_map(|c| match c {
                ' ' => Some('-'),
                '-' | '_' => Some(c),
                c if c.is_alphanumeric() => Some(c),
                _ => None,
            })
            .flat_map(char::to_lowercase)
            .collect();
        let mut anchor = slug.clone();
        let mut n = 0;
        while !found.insert(anchor.clone()) {
            n += 1;
            anchor = format!("{slug}-{n}");
        }
    }
    found
}

#[test]
fn heading_anchors_are_made_as_github_makes_them() {
    let page = "# Title\n## `POST /identify`\n## Matching modes (issue 16)\n## Title\n```sh\n# not a heading\n```\n";
    let made = anchors(page);
    let expected = [
        "title",
        "post-identify",
        "matching-modes-issue-16",
        "title-1",
    ];
    assert_eq!(made, expected.iter().map(|a| a.to_string()).collect());
    assert_eq!(
        link_targets("see [a](x.md#b), `[no](code)` and ![img](p.png)"),
        ["x.md#b", "p.png"]
    );
}

#[test]
fn every_relative_link_in_the_docs_leads_to_a_file_and_a_heading() {
    let mut broken = Vec::new();
    for page in markdown_pages() {
        let text = read(&page);
        let here = page.parent().unwrap();
        for target in prose(&text).into_iter().flat_map(link_targets) {
            if target.contains("://") || target.starts_with("mailto:") {
                continue;
            }
            let (path, anchor) = target.split_once('#').unwrap_or((&target, ""));
            let file = if path.is_empty() {
                page.clone()
            } else {
                here.join(path)
            };
            let shown = page.strip_prefix(root()).unwrap().display().to_string();
            if !file.exists() {
                broken.push(format!("{shown}: {target} (no such file)"));
            } else if !anchor.is_empty() && !anchors(&read(&file)).contains(anchor) {
                broken.push(format!("{shown}: {target} (no such heading)"));
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}
