//! `--config.file`: a YAML map whose keys are flag names without the
//! leading dashes (`raft.node-id: 1`, `endpoint: [a, b]`). Its entries are
//! turned into flags placed before the command line's own, so flags given
//! on the command line win.

use anyhow::{Context, bail};

/// Flags holding secrets: accepted from the config file (or their
/// environment variable), refused on the command line, where `ps` and
/// `/proc/<pid>/cmdline` show them to every user of the machine.
const SECRET_FLAGS: &[(&str, &str)] = &[("objstore.s3.secret-access-key", "AWS_SECRET_ACCESS_KEY")];

/// Expands `--config.file FILE` (or `--config.file=FILE`) in `args`.
pub fn expand(args: Vec<String>) -> anyhow::Result<Vec<String>> {
    for a in &args {
        for (flag, env) in SECRET_FLAGS {
            let dashed = format!("--{flag}");
            if *a == dashed || a.starts_with(&format!("{dashed}=")) {
                bail!(
                    "{dashed} is refused on the command line, where ps shows it to every user: \
                     set {env} or put `{flag}: ...` in --config.file"
                );
            }
        }
    }
    let mut file = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        if a == "--config.file" {
            file = Some(it.next().context("--config.file needs a path")?);
        } else if let Some(p) = a.strip_prefix("--config.file=") {
            file = Some(p.to_string());
        } else {
            rest.push(a);
        }
    }
    let Some(path) = file else { return Ok(rest) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read config file {path}"))?;
    let from_file = flags_from_yaml(&text).with_context(|| format!("invalid config file {path}"))?;
    // argv[0] and the subcommand stay first.
    let split = rest.len().min(2);
    let mut out: Vec<String> = rest[..split].to_vec();
    out.extend(from_file);
    out.extend_from_slice(&rest[split..]);
    Ok(out)
}

fn scalar(v: &serde_yaml::Value, key: &str) -> anyhow::Result<String> {
    Ok(match v {
        serde_yaml::Value::String(s) => s.clone(),
        serde_yaml::Value::Number(n) => n.to_string(),
        serde_yaml::Value::Bool(b) => b.to_string(),
        _ => bail!("value of `{key}` must be a string, number, boolean or a list of them"),
    })
}

pub fn flags_from_yaml(text: &str) -> anyhow::Result<Vec<String>> {
    let doc: serde_yaml::Value = serde_yaml::from_str(text)?;
    let mut out = Vec::new();
    let serde_yaml::Value::Mapping(map) = doc else {
        if doc.is_null() {
            return Ok(out);
        }
        bail!("the file must be a map of flag names to values");
    };
    for (k, v) in map {
        let key = k.as_str().context("keys must be flag names")?.to_string();
        match v {
            serde_yaml::Value::Sequence(items) => {
                for item in items {
                    out.push(format!("--{key}"));
                    out.push(scalar(&item, &key)?);
                }
            }
            v => {
                out.push(format!("--{key}"));
                out.push(scalar(&v, &key)?);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_becomes_flags_before_the_command_line() {
        let flags = flags_from_yaml("raft.node-id: 2\nendpoint: [a, b]\nquery.partial: true\n").unwrap();
        assert_eq!(flags, ["--raft.node-id", "2", "--endpoint", "a", "--endpoint", "b", "--query.partial", "true"]);
        assert!(flags_from_yaml("x: {a: 1}").is_err());
        assert!(flags_from_yaml("- a").is_err());
    }

    #[test]
    fn secrets_are_refused_on_the_command_line_and_taken_from_the_file() {
        let args = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        for bad in [
            args(&["strata", "store", "--objstore.s3.secret-access-key=s3cr3t"]),
            args(&["strata", "store", "--objstore.s3.secret-access-key", "s3cr3t"]),
        ] {
            let err = expand(bad).unwrap_err().to_string();
            assert!(err.contains("refused on the command line") && err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
            assert!(!err.contains("s3cr3t"), "the error repeats the secret: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yml");
        std::fs::write(&file, "objstore.s3.secret-access-key: s3cr3t\n").unwrap();
        let out = expand(args(&["strata", "store", &format!("--config.file={}", file.display())])).unwrap();
        assert_eq!(out, args(&["strata", "store", "--objstore.s3.secret-access-key", "s3cr3t"]));
    }
}
