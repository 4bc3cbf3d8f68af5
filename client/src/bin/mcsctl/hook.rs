//! `mcsctl hook poststop`: the OCI hook that frees a container's label when
//! the container is gone, for runtimes that died or forgot to call Release.
//!
//! podman and CRI-O run it from `hooks.d` with the container's OCI state
//! JSON on stdin. It must never fail the container's teardown: whatever goes
//! wrong (mcsd down, bad input) is reported on stderr and the exit status is
//! 0; an allocation left behind is released later by `mcsctl reconcile`.

use std::io::{Read, Write};
use std::path::Path;

use mcs_client::Client;

/// The container id from OCI state JSON (`{"ociVersion": ..., "id": ...}`).
fn container_id(state: &str) -> Result<String, String> {
    let value: serde_json::Value = serde_json::from_str(state)
        .map_err(|e| format!("the OCI state on stdin is not JSON: {e}"))?;
    match value.get("id").and_then(|v| v.as_str()) {
        Some(id) if !id.is_empty() => Ok(id.to_owned()),
        _ => Err("the OCI state on stdin has no \"id\"".into()),
    }
}

/// Releases the container named on stdin; always returns (exit 0).
pub(crate) async fn poststop(socket: &Path, out: &mut impl Write) {
    let mut state = String::new();
    let id = match std::io::stdin().read_to_string(&mut state) {
        Ok(_) => container_id(&state),
        Err(e) => Err(format!("cannot read the OCI state from stdin: {e}")),
    };
    let id = match id {
        Ok(id) => id,
        Err(e) => {
            eprintln!("mcsctl hook poststop: {e}; nothing released");
            return;
        }
    };
    let released = async {
        let mut client = Client::connect(socket).await?;
        client.release(id.clone()).await
    }
    .await;
    match released {
        Ok(r) if r.released => {
            let level = r.allocation.map(|a| a.level).unwrap_or_default();
            let _ = writeln!(out, "mcsctl hook poststop: released {id} ({level})");
        }
        Ok(_) => {
            let _ = writeln!(out, "mcsctl hook poststop: {id} held no label");
        }
        Err(e) => {
            eprintln!(
                "mcsctl hook poststop: {id} not released ({e}); it stays allocated until `mcsctl reconcile` or a later release"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_comes_from_oci_state() {
        let state =
            r#"{"ociVersion":"1.0.2","id":"4f2c","status":"stopped","pid":0,"bundle":"/b"}"#;
        assert_eq!(container_id(state).unwrap(), "4f2c");
        assert!(container_id("{}").unwrap_err().contains("no \"id\""));
        assert!(container_id("not json").unwrap_err().contains("not JSON"));
    }
}
