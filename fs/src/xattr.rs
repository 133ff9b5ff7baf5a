//! Extended attributes: `user.ccbt.local` = `full | partial | none` says how much of a file is
//! in the local store (so scripts and file managers can show what reads without the network).
//! Read-only; other names do not exist (ENODATA), and setting attributes is not supported.

use crate::inode::Content;
use crate::Shared;
use ccbt_xet::listing::Kind;
use fuser::{Errno, ReplyXattr};
use std::ffi::OsStr;

pub(crate) const LOCAL: &str = "user.ccbt.local";

fn reply_bytes(data: &[u8], size: u32, reply: ReplyXattr) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if data.len() > size as usize {
        reply.error(Errno::from_i32(libc::ERANGE));
    } else {
        reply.data(data);
    }
}

/// The value of `user.ccbt.local` for a file (None for directories and links).
fn local_state(s: &Shared, ino: u64) -> Result<Option<&'static str>, Errno> {
    let (content, size) = {
        let st = s.state();
        let n = st.node(ino).ok_or(Errno::ENOENT)?;
        if n.kind != Kind::File || n.special.is_some() {
            return Ok(None);
        }
        (n.content.clone(), n.size)
    };
    // The store walk runs without the state lock.
    Ok(Some(match content {
        Content::Overlay(_) => "full",
        Content::Cas(root) => {
            ccbt_xet::local::file_local(&s.reader.node.shares.store, root.0, size).state()
        }
    }))
}

pub(crate) fn getxattr(s: &Shared, ino: u64, name: &OsStr, size: u32, reply: ReplyXattr) {
    if name != LOCAL {
        return reply.error(Errno::from_i32(libc::ENODATA));
    }
    match local_state(s, ino) {
        Ok(Some(v)) => reply_bytes(v.as_bytes(), size, reply),
        Ok(None) => reply.error(Errno::from_i32(libc::ENODATA)),
        Err(e) => reply.error(e),
    }
}

pub(crate) fn listxattr(s: &Shared, ino: u64, size: u32, reply: ReplyXattr) {
    match local_state(s, ino) {
        Ok(Some(_)) => reply_bytes(format!("{LOCAL}\0").as_bytes(), size, reply),
        Ok(None) => reply_bytes(b"", size, reply),
        Err(e) => reply.error(e),
    }
}
