//! The operator's config as a simulated run takes it: checks that depend on the production host
//! (spool and log directories, pipe programs) do not stop a run that uses none of them; absolute
//! paths are looked for under `--root` (a checkout of `/etc/pmta`); a DKIM key file that is not
//! here (private keys rarely travel with a config) is replaced by a stand-in key made for the run,
//! whose public half the world publishes, so the config's signing logic is still exercised.

use mta::config::{Config, HostPaths};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A config ready for a simulated run, with what was done to it.
#[derive(Debug)]
pub struct UnderTest {
    /// The config.
    pub config: Config,
    /// One line per adjustment (stand-in keys), for the run's notes.
    pub notes: Vec<String>,
}

/// Loads `path` for a run: host checks deferred, absolute paths under `root`, stand-in keys for
/// key files that cannot be read (written under `scratch`).
pub fn load(path: &Path, root: Option<&Path>, scratch: &Path) -> Result<UnderTest, String> {
    let host = HostPaths::new(root.map(Path::to_path_buf), true);
    let mut config = mta::config::check_file(path, &host)
        .into_result()
        .map_err(|e| e.to_string())?;
    let mut notes = Vec::new();
    let mut made: BTreeMap<PathBuf, PathBuf> = BTreeMap::new();
    let keys = config
        .domain_keys
        .iter_mut()
        .chain(
            config
                .vmtas
                .values_mut()
                .flat_map(|v| v.domain_keys.iter_mut()),
        )
        .chain(
            config
                .pools
                .values_mut()
                .flat_map(|p| p.domain_keys.iter_mut()),
        );
    for k in keys {
        let at = host.resolve(&k.path);
        if mta::dkim::keys::public_txt(&at).is_ok() {
            k.path = at;
            continue;
        }
        if let Some(p) = made.get(&k.path) {
            k.path = p.clone();
            continue;
        }
        let stand_in = scratch.join(format!("stand-in-{}.pem", made.len() + 1));
        let g = mta::dkim::generate(mta::dkim::KeyAlgorithm::Rsa2048)?;
        std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
        std::fs::write(&stand_in, g.private_pem.as_bytes())
            .map_err(|e| format!("{}: {e}", stand_in.display()))?;
        notes.push(format!(
            "DKIM key {} ({}) cannot be read here: the run signs for {} with a stand-in key (selector {}), published in the world's DNS",
            k.path.display(),
            k.span,
            k.domain,
            k.selector
        ));
        made.insert(k.path.clone(), stand_in.clone());
        k.path = stand_in;
    }
    Ok(UnderTest { config, notes })
}
