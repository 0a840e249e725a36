//! Static routes: files from the route's root instead of a service, with ETag/Last-Modified and 304s, ranges, HEAD, precompressed siblings, and big files streamed in bounded memory.
//!
//! The decisions are pure functions in `switchyard_core::static_files`; this module does the
//! file I/O (on tokio's blocking pool, never on the proxy's threads) and writes the answer.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use bytes::{Bytes, BytesMut};
use http::header;
use pingora::http::ResponseHeader;
use pingora_error::{Error, ErrorType, Result};
use pingora_proxy::Session;

use super::ctx::Ctx;
use super::respond;
use crate::config::static_site::StaticSite;
use crate::static_files::{self as sf, Range};

/// The most of a file held in memory at once: files up to this size are read whole (with the
/// lookup, in one trip to the blocking pool), bigger ones are sent in chunks of this size.
const CHUNK: u64 = 128 * 1024;

/// The precompressed siblings looked for, in order of preference: (coding, file suffix).
const SIBLINGS: [(&str, &str); 2] = [("br", ".br"), ("gzip", ".gz")];

/// A file found for the request, opened.
struct Found {
    file: File,
    len: u64,
    modified: SystemTime,
    /// The path under the root the request resolved to (before a precompressed sibling took
    /// its place): its content type and Cache-Control rule.
    path: String,
    /// `br` or `gzip` when a precompressed sibling is sent.
    encoding: Option<&'static str>,
    /// The file's first [`CHUNK`] bytes (all of it when it is no bigger), read with the lookup.
    first: Bytes,
}

/// What the file system says about a request.
enum Lookup {
    Found(Found),
    /// No file (nor index, nor fallback): 404.
    Missing,
    /// A symlink out of the root or onto a dotfile: 404, never the fallback.
    Refused,
}

/// Answers a request on a static route; the caller returns `Ok(true)` from `request_filter`.
pub(super) async fn serve(session: &mut Session, ctx: &Ctx, site: &Arc<StaticSite>) -> Result<()> {
    let req = session.req_header();
    if req.method != http::Method::GET && req.method != http::Method::HEAD {
        let allow = [(header::ALLOW, "GET, HEAD".to_string())];
        return respond::write_error_headers(session, ctx, 405, None, &allow).await;
    }
    let Some(route) = ctx.route() else {
        return respond::write_error(session, ctx, 404).await;
    };
    let segments = match sf::segments(ctx.path(req), &route.prefix, route.strip_prefix) {
        Ok(s) => s,
        Err(why) => {
            log::debug!("static file refused: {why}");
            return not_found(session, ctx).await;
        }
    };
    let header_str = |name: header::HeaderName| {
        req.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let accept = header_str(header::ACCEPT_ENCODING);
    let codings = SIBLINGS.map(|(coding, _)| sf::accepts(accept.as_deref(), coding));
    let site_for_lookup = site.clone();
    let found = tokio::task::spawn_blocking(move || lookup(&site_for_lookup, &segments, codings))
        .await
        .map_err(|e| Error::because(ErrorType::InternalError, "static file lookup", e))?;
    let found = match found {
        Ok(Lookup::Found(f)) => f,
        Ok(Lookup::Missing | Lookup::Refused) => return not_found(session, ctx).await,
        Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
            return respond::write_error_with(session, ctx, 403, Some("forbidden")).await;
        }
        Err(e) => {
            log::warn!("static file: {e}");
            return respond::write_error(session, ctx, 500).await;
        }
    };

    let etag = sf::etag(found.modified, found.len);
    let last_modified = sf::http_date(found.modified);
    let req = session.req_header();
    let get = |name| req.headers.get(name).and_then(|v| v.to_str().ok());
    let fresh = sf::not_modified(
        get(header::IF_NONE_MATCH),
        get(header::IF_MODIFIED_SINCE),
        &etag,
        found.modified,
    );
    let range = if fresh {
        Range::Full
    } else if sf::if_range_holds(get(header::IF_RANGE), &etag, found.modified) {
        sf::range(get(header::RANGE), found.len)
    } else {
        Range::Full
    };
    let head = req.method == http::Method::HEAD;

    let (status, start, len) = match range {
        _ if fresh => (304, 0, 0),
        Range::Full => (200, 0, found.len),
        Range::Part { start, end } => (206, start, end - start + 1),
        Range::Unsatisfiable => {
            let headers = [(header::CONTENT_RANGE, format!("bytes */{}", found.len))];
            return respond::write_error_headers(session, ctx, 416, None, &headers).await;
        }
    };
    let mut resp = ResponseHeader::build(status, Some(12))?;
    if status != 304 {
        let content_type = sf::content_type(&found.path);
        resp.insert_header(header::CONTENT_TYPE, content_type)?;
        resp.insert_header(header::CONTENT_LENGTH, len)?;
        resp.insert_header(header::ACCEPT_RANGES, "bytes")?;
    }
    if status == 206 {
        let end = start + len - 1;
        let range = format!("bytes {start}-{end}/{}", found.len);
        resp.insert_header(header::CONTENT_RANGE, range)?;
    }
    resp.insert_header(header::ETAG, &etag)?;
    resp.insert_header(header::LAST_MODIFIED, &last_modified)?;
    if let Some(control) = site.cache_control(&found.path) {
        resp.insert_header(header::CACHE_CONTROL, control.clone())?;
    }
    if let Some(coding) = found.encoding {
        resp.insert_header(header::CONTENT_ENCODING, coding)?;
        resp.insert_header(header::VARY, "Accept-Encoding")?;
    }
    resp.insert_header("x-request-id", ctx.request_id.as_str())?;
    respond::decorate(&mut resp, ctx, session.req_header())?;
    // On-the-fly compression only for a whole, not precompressed file, as the route's
    // `compression` decides for an upstream answer (types, min_length).
    if status == 200 && found.encoding.is_none() {
        super::compress::response(session, &route.options, &resp);
    } else {
        super::compress::off(session);
    }

    let no_body = head || len == 0;
    session
        .write_response_header(Box::new(resp), no_body)
        .await?;
    if no_body {
        return session.write_response_body(None, true).await;
    }
    let (end, held) = (start + len, found.first.len() as u64);
    if start < held {
        let part = found.first.slice(start as usize..end.min(held) as usize);
        session.write_response_body(Some(part), end <= held).await?;
    }
    if end <= held {
        return Ok(());
    }
    let from = start.max(held);
    stream(session, Arc::new(found.file), from, end - from).await
}

/// Sends `len` bytes of `file` from `start`, one [`CHUNK`] at a time: each read waits for the
/// previous chunk to be written, so memory stays bounded whatever the file's size.
async fn stream(session: &mut Session, file: Arc<File>, start: u64, len: u64) -> Result<()> {
    let mut offset = start;
    let end = start + len;
    while offset < end {
        let n = CHUNK.min(end - offset) as usize;
        let file = file.clone();
        let chunk = tokio::task::spawn_blocking(move || -> io::Result<Bytes> {
            let mut buf = BytesMut::zeroed(n);
            file.read_exact_at(&mut buf, offset)?;
            Ok(buf.freeze())
        })
        .await
        .map_err(|e| Error::because(ErrorType::InternalError, "static file read", e))?
        .map_err(|e| Error::because(ErrorType::FileReadError, "static file read", e))?;
        offset += n as u64;
        session
            .write_response_body(Some(chunk), offset == end)
            .await?;
    }
    Ok(())
}

async fn not_found(session: &mut Session, ctx: &Ctx) -> Result<()> {
    respond::write_error_with(session, ctx, 404, Some("not found")).await
}

/// Finds and opens the file for `segments` (blocking: run on the blocking pool): the file, a
/// directory's index, or the fallback; a precompressed sibling when `codings` (in
/// [`SIBLINGS`] order) accepts one.
fn lookup(site: &StaticSite, segments: &[String], codings: [bool; 2]) -> io::Result<Lookup> {
    let mut path: String = segments.iter().flat_map(|s| ["/", s.as_str()]).collect();
    let mut resolved = resolve(site, segments)?;
    if let Resolved::File(_, p) = &resolved {
        path = p.clone();
    }
    if matches!(resolved, Resolved::Missing) {
        if let Some(fallback) = &site.fallback {
            let segments = sf::segments(fallback, "/", false).unwrap_or_default();
            resolved = resolve(site, &segments)?;
            if let Resolved::File(_, p) = &resolved {
                path = p.clone();
            }
        }
    }
    let mut opened = match resolved {
        Resolved::File(opened, _) => *opened,
        Resolved::Missing => return Ok(Lookup::Missing),
        Resolved::Refused => return Ok(Lookup::Refused),
    };
    let mut encoding = None;
    for ((coding, suffix), accepted) in SIBLINGS.into_iter().zip(codings) {
        if !accepted {
            continue;
        }
        let mut name = opened.real.clone().into_os_string();
        name.push(suffix);
        if let Some(sibling) =
            open_real(Path::new(&name))?.filter(|s| s.meta.is_file() && allowed(site, &s.real))
        {
            opened = sibling;
            encoding = Some(coding);
            break;
        }
    }
    let Opened { mut file, meta, .. } = opened;
    let len = meta.len();
    let (first, len) = if len <= CHUNK {
        let mut buf = Vec::with_capacity(len as usize);
        file.read_to_end(&mut buf)?;
        // What was read is what the headers describe (a file rewritten meanwhile).
        let read = buf.len() as u64;
        (Bytes::from(buf), read)
    } else {
        let mut buf = BytesMut::zeroed(CHUNK as usize);
        file.read_exact_at(&mut buf, 0)?;
        (buf.freeze(), len)
    };
    Ok(Lookup::Found(Found {
        file,
        len,
        modified: meta.modified()?,
        path,
        encoding,
        first,
    }))
}

enum Resolved {
    /// The opened file, and the path under the root it was asked by (the index added).
    File(Box<Opened>, String),
    Missing,
    Refused,
}

/// The file `segments` names under the root: itself, or its directory's index file.
fn resolve(site: &StaticSite, segments: &[String]) -> io::Result<Resolved> {
    let mut candidate = site.root.clone();
    candidate.extend(segments);
    let mut path: String = segments.iter().flat_map(|s| ["/", s.as_str()]).collect();
    let Some(mut opened) = open_real(&candidate)? else {
        return Ok(Resolved::Missing);
    };
    if !allowed(site, &opened.real) {
        return Ok(Resolved::Refused);
    }
    if opened.meta.is_dir() {
        path.push('/');
        path.push_str(&site.index);
        match open_real(&opened.real.join(&site.index))? {
            Some(index) if !allowed(site, &index.real) => return Ok(Resolved::Refused),
            Some(index) => opened = index,
            None => return Ok(Resolved::Missing),
        }
    }
    Ok(if opened.meta.is_file() {
        Resolved::File(Box::new(opened), path)
    } else {
        // A directory without index (no listings).
        Resolved::Missing
    })
}

/// An opened file or directory, with its real path (symlinks followed).
struct Opened {
    file: File,
    real: PathBuf,
    meta: std::fs::Metadata,
}

/// Opens `path` when it is a regular file or a directory (never a FIFO, socket or device); its
/// real path comes from `/proc/self/fd` (one readlink rather than `realpath`'s walk), or from
/// `canonicalize` where that is not mounted. `None` when nothing (usable) is there.
fn open_real(path: &Path) -> io::Result<Option<Opened>> {
    let absent = |e: &io::Error| {
        matches!(
            e.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        )
    };
    let kind = match std::fs::metadata(path) {
        Ok(m) => m.file_type(),
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    if !kind.is_file() && !kind.is_dir() {
        return Ok(None);
    }
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if absent(&e) => return Ok(None),
        Err(e) => return Err(e),
    };
    let real = match std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        Ok(real) => real,
        Err(_) => std::fs::canonicalize(path)?,
    };
    let meta = file.metadata()?;
    Ok(Some(Opened { file, real, meta }))
}

/// Whether `real` lies under the root and no component of it there starts with `.` (a symlink
/// onto `.git`).
fn allowed(site: &StaticSite, real: &Path) -> bool {
    real.strip_prefix(&site.root).is_ok_and(|rel| {
        rel.components()
            .all(|c| !c.as_os_str().as_encoded_bytes().starts_with(b"."))
    })
}
