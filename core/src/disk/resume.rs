//! Checkpoints (resume data): `<data dir>/checkpoints/<info-hash>.ckpt`, bencoded, written through a
//! temporary file and a rename so a crash never leaves a torn checkpoint.
//!
//! A checkpoint holds the torrent itself (so `ccbt resume <info-hash>` needs nothing else), where it
//! downloads to, the verified-piece bitfield, and each file's size and mtime when it was saved: if
//! those still match, resuming trusts the bitfield; otherwise every piece is rechecked.

use crate::bencode::{self, OwnedValue, Value};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub info_hash_hex: String,
    pub torrent: Vec<u8>,
    pub out_dir: PathBuf,
    pub have: Vec<u8>,
    pub files: Vec<Option<(u64, i128)>>,
    pub saved: i64,
    pub only: Vec<String>,
    pub skip: Vec<String>,
    pub name: String,
    pub pieces_have: u64,
    pub pieces_total: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {0} is damaged: {1}; delete it with `ccbt checkpoints delete`")]
    Damaged(PathBuf, String),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
}

pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("checkpoints")
}

pub fn path(data_dir: &Path, info_hash_hex: &str) -> PathBuf {
    dir(data_dir).join(format!("{info_hash_hex}.ckpt"))
}

impl Checkpoint {
    pub fn encode(&self) -> Vec<u8> {
        let strs = |v: &[String]| {
            OwnedValue::List(v.iter().map(|s| OwnedValue::bytes(s.as_bytes())).collect())
        };
        OwnedValue::dict([
            (
                "files",
                OwnedValue::List(
                    self.files
                        .iter()
                        .map(|f| match f {
                            Some((len, m)) => OwnedValue::List(vec![
                                OwnedValue::Int(*len as i64),
                                OwnedValue::bytes(m.to_string()),
                            ]),
                            None => OwnedValue::List(vec![]),
                        })
                        .collect(),
                ),
            ),
            ("have", OwnedValue::bytes(self.have.clone())),
            (
                "info_hash",
                OwnedValue::bytes(self.info_hash_hex.as_bytes()),
            ),
            ("name", OwnedValue::bytes(self.name.as_bytes())),
            ("only", strs(&self.only)),
            (
                "out_dir",
                OwnedValue::bytes(self.out_dir.to_string_lossy().as_bytes()),
            ),
            ("pieces_have", OwnedValue::Int(self.pieces_have as i64)),
            ("pieces_total", OwnedValue::Int(self.pieces_total as i64)),
            ("saved", OwnedValue::Int(self.saved)),
            ("skip", strs(&self.skip)),
            ("torrent", OwnedValue::bytes(self.torrent.clone())),
        ])
        .encode()
    }

    pub fn decode(b: &[u8], at: &Path) -> Result<Checkpoint, CheckpointError> {
        let bad = |m: &str| CheckpointError::Damaged(at.to_path_buf(), m.to_string());
        let v = bencode::decode(b).map_err(|e| bad(&e.to_string()))?;
        let d = v.as_dict().ok_or_else(|| bad("not a dictionary"))?;
        let bytes = |k: &str| {
            d.get(k.as_bytes())
                .and_then(Value::as_bytes)
                .ok_or_else(|| bad(k))
        };
        let int = |k: &str| {
            d.get(k.as_bytes())
                .and_then(Value::as_int)
                .ok_or_else(|| bad(k))
        };
        let strs = |k: &str| -> Result<Vec<String>, CheckpointError> {
            Ok(d.get(k.as_bytes())
                .and_then(Value::as_list)
                .ok_or_else(|| bad(k))?
                .iter()
                .filter_map(|x| x.as_str().map(str::to_string))
                .collect())
        };
        let files = d
            .get(b"files")
            .and_then(Value::as_list)
            .ok_or_else(|| bad("files"))?
            .iter()
            .map(|f| {
                let l = f.as_list().unwrap_or(&[]);
                match l {
                    [len, m] => Some((len.as_int()? as u64, m.as_str()?.parse().ok()?)),
                    _ => None,
                }
            })
            .collect();
        Ok(Checkpoint {
            info_hash_hex: String::from_utf8_lossy(bytes("info_hash")?).into_owned(),
            torrent: bytes("torrent")?.to_vec(),
            out_dir: PathBuf::from(String::from_utf8_lossy(bytes("out_dir")?).into_owned()),
            have: bytes("have")?.to_vec(),
            files,
            saved: int("saved")?,
            only: strs("only")?,
            skip: strs("skip")?,
            name: String::from_utf8_lossy(bytes("name")?).into_owned(),
            pieces_have: int("pieces_have")? as u64,
            pieces_total: int("pieces_total")? as u64,
        })
    }

    pub fn save(&self, data_dir: &Path) -> Result<(), CheckpointError> {
        let d = dir(data_dir);
        std::fs::create_dir_all(&d).map_err(|e| CheckpointError::Io(d.clone(), e))?;
        let p = path(data_dir, &self.info_hash_hex);
        let tmp = p.with_extension("tmp");
        std::fs::write(&tmp, self.encode()).map_err(|e| CheckpointError::Io(tmp.clone(), e))?;
        std::fs::rename(&tmp, &p).map_err(|e| CheckpointError::Io(p.clone(), e))
    }

    pub fn load(
        data_dir: &Path,
        info_hash_hex: &str,
    ) -> Result<Option<Checkpoint>, CheckpointError> {
        let p = path(data_dir, info_hash_hex);
        match std::fs::read(&p) {
            Ok(b) => Checkpoint::decode(&b, &p).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CheckpointError::Io(p, e)),
        }
    }

    /// Every checkpoint in the data dir (damaged ones as errors).
    pub fn list(data_dir: &Path) -> Vec<Result<Checkpoint, CheckpointError>> {
        let Ok(rd) = std::fs::read_dir(dir(data_dir)) else {
            return Vec::new();
        };
        let mut out: Vec<_> = rd
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "ckpt"))
            .map(|e| {
                let p = e.path();
                std::fs::read(&p)
                    .map_err(|err| CheckpointError::Io(p.clone(), err))
                    .and_then(|b| Checkpoint::decode(&b, &p))
            })
            .collect();
        out.sort_by_key(|c| c.as_ref().map(|c| c.saved).unwrap_or(0));
        out
    }

    pub fn delete(data_dir: &Path, info_hash_hex: &str) -> std::io::Result<bool> {
        match std::fs::remove_file(path(data_dir, info_hash_hex)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let t = tempfile::tempdir().unwrap();
        let c = Checkpoint {
            info_hash_hex: "ab".repeat(20),
            torrent: b"d4:infodee".to_vec(),
            out_dir: "/tmp/x".into(),
            have: vec![0xf0],
            files: vec![Some((10, 1_700_000_000_123_456_789)), None],
            saved: 5,
            only: vec!["*.mkv".into()],
            skip: vec![],
            name: "n".into(),
            pieces_have: 4,
            pieces_total: 8,
        };
        c.save(t.path()).unwrap();
        assert_eq!(
            Checkpoint::load(t.path(), &c.info_hash_hex).unwrap(),
            Some(c.clone())
        );
        assert_eq!(Checkpoint::list(t.path()).len(), 1);
        std::fs::write(path(t.path(), &c.info_hash_hex), b"garbage").unwrap();
        assert!(Checkpoint::load(t.path(), &c.info_hash_hex).is_err());
        assert!(Checkpoint::delete(t.path(), &c.info_hash_hex).unwrap());
        assert!(!Checkpoint::delete(t.path(), &c.info_hash_hex).unwrap());
    }
}
