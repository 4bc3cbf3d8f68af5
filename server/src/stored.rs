//! Labels of containers that exist but do not run: the levels the engines
//! recorded with their container records, which they give back at the
//! next `start`. mcsd holds them at start beside the running processes'
//! ([`crate::inuse::adopt`]), as `stored:<record id>`, owner `running`.
//!
//! - podman / CRI-O (containers/storage): `<driver>-containers/containers.json`,
//!   each container's `flags.ProcessLabel` and `flags.MountLabel`, and
//!   `<driver>-layers/layers.json`, each layer's `mountlabel` (the label
//!   its rootfs is mounted with), under the storage root
//!   (`/var/lib/containers/storage`).
//! - docker (moby): `containers/<id>/config.v2.json`, `ProcessLabel` and
//!   `MountLabel`, under the data root (`/var/lib/docker`).
//!
//! Files that are missing or unreadable are skipped (the engine may not be
//! installed); a file that is not the engine's format is an error, so a
//! changed format is noticed rather than read as "no labels".

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::context::level_of_context;
use crate::level::Level;

/// Levels recorded by stored containers, each with the id of a record
/// holding it (a container's, or a layer's for a mount label).
pub type Stored = BTreeMap<Level, String>;

fn read_json(path: &Path) -> Result<Option<Value>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: not JSON: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn record(found: &mut Stored, label: Option<&Value>, holder: &str) {
    if let Some(level) = label.and_then(Value::as_str).and_then(level_of_context) {
        found.entry(level).or_insert_with(|| holder.to_owned());
    }
}

fn entries<'a>(v: &'a Value, path: &Path) -> Result<&'a Vec<Value>, String> {
    v.as_array()
        .ok_or_else(|| format!("{}: not a JSON list", path.display()))
}

/// Levels in containers/storage under `root`, every graph driver.
pub fn containers_storage(root: &Path) -> Result<Stored, String> {
    let mut found = Stored::new();
    let dir = match std::fs::read_dir(root) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(format!("cannot read {}: {e}", root.display())),
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with("-containers") {
            let path = entry.path().join("containers.json");
            if let Some(v) = read_json(&path)? {
                for c in entries(&v, &path)? {
                    let id = c.get("id").and_then(Value::as_str).unwrap_or("?");
                    let flags = c.get("flags");
                    record(&mut found, flags.and_then(|f| f.get("ProcessLabel")), id);
                    record(&mut found, flags.and_then(|f| f.get("MountLabel")), id);
                }
            }
        } else if name.ends_with("-layers") {
            let path = entry.path().join("layers.json");
            if let Some(v) = read_json(&path)? {
                for l in entries(&v, &path)? {
                    let id = l.get("id").and_then(Value::as_str).unwrap_or("?");
                    record(&mut found, l.get("mountlabel"), id);
                }
            }
        }
    }
    Ok(found)
}

/// Levels in docker's containers under `root` (`/var/lib/docker`).
pub fn docker(root: &Path) -> Result<Stored, String> {
    let mut found = Stored::new();
    let dir = match std::fs::read_dir(root.join("containers")) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(found),
        Err(e) => return Err(format!("cannot read {}/containers: {e}", root.display())),
    };
    for entry in dir.flatten() {
        let id = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path().join("config.v2.json");
        if let Some(v) = read_json(&path)? {
            record(&mut found, v.get("ProcessLabel"), &id);
            record(&mut found, v.get("MountLabel"), &id);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Written by the real `podman create` (podman 4.3.1, overlay driver)
    /// on the development host, one container and its layer. SELinux is
    /// off there, so podman stored empty labels.
    const CONTAINERS: &str = include_str!("stored_testdata/containers.json");
    const LAYERS: &str = include_str!("stored_testdata/layers.json");

    fn storage(containers: &str, layers: &str) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        let c = root.path().join("overlay-containers");
        let l = root.path().join("overlay-layers");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::create_dir_all(&l).unwrap();
        std::fs::write(c.join("containers.json"), containers).unwrap();
        std::fs::write(l.join("layers.json"), layers).unwrap();
        root
    }

    fn level(s: &str) -> Level {
        s.parse().unwrap()
    }

    #[test]
    fn podman_files_without_selinux_hold_nothing() {
        let root = storage(CONTAINERS, LAYERS);
        assert_eq!(containers_storage(root.path()).unwrap(), Stored::new());
    }

    #[test]
    fn podman_labels_in_containers_and_layers_are_found() {
        // The real files with the fields set as containers/storage sets
        // them under SELinux: CreateContainer stores the labels
        // go-selinux's InitLabels returned in the container's flags
        // ("ProcessLabel", "MountLabel") and the mount label on the
        // container's layer ("mountlabel", omitted when empty).
        let mut containers: Value = serde_json::from_str(CONTAINERS).unwrap();
        containers[0]["flags"]["ProcessLabel"] = "system_u:system_r:container_t:s0:c1,c2".into();
        containers[0]["flags"]["MountLabel"] = "system_u:object_r:container_file_t:s0:c1,c2".into();
        let mut layers: Value = serde_json::from_str(LAYERS).unwrap();
        // A layer whose container record is gone still has its label
        // (e.g. a different level, as after a rewrite): held too.
        layers[0]["mountlabel"] = "system_u:object_r:container_file_t:s0:c3,c4".into();
        let root = storage(&containers.to_string(), &layers.to_string());
        let found = containers_storage(root.path()).unwrap();
        let container = containers[0]["id"].as_str().unwrap();
        let layer = layers[0]["id"].as_str().unwrap();
        assert_eq!(
            found,
            Stored::from([
                (level("s0:c1,c2"), container.to_owned()),
                (level("s0:c3,c4"), layer.to_owned()),
            ])
        );
    }

    #[test]
    fn a_missing_store_holds_nothing_and_a_broken_one_is_an_error() {
        let none = tempfile::tempdir().unwrap();
        assert_eq!(
            containers_storage(&none.path().join("no")).unwrap(),
            Stored::new()
        );
        assert_eq!(docker(none.path()).unwrap(), Stored::new());
        let root = storage("{\"not\": \"a list\"}", "[]");
        let e = containers_storage(root.path()).unwrap_err();
        assert!(e.contains("containers.json: not a JSON list"), "{e}");
    }

    #[test]
    fn docker_labels_in_config_v2_are_found() {
        // moby's container.Container fields, as daemon/create.go fills them
        // (dockerd does not run on the development host to write one).
        let root = tempfile::tempdir().unwrap();
        let id = "4a5e".repeat(16);
        let dir = root.path().join("containers").join(&id);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("config.v2.json"),
            r#"{"ID":"x","State":{"Running":false},"MountLabel":"system_u:object_r:container_file_t:s0:c5,c6","ProcessLabel":"system_u:system_r:container_t:s0:c5,c6","Driver":"overlay2"}"#,
        )
        .unwrap();
        assert_eq!(
            docker(root.path()).unwrap(),
            Stored::from([(level("s0:c5,c6"), id)])
        );
    }
}
