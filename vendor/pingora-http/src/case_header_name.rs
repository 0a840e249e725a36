// Copyright 2026 Cloudflare, Inc.
//
// Licensed under the Apache License, Version 2.0 (the "License");
// you may not use this file except in compliance with the License.
// You may obtain a copy of the License at
//
// http://www.apache.org/licenses/LICENSE-2.0
//
// Unless required by applicable law or agreed to in writing, software
// distributed under the License is distributed on an "AS IS" BASIS,
// WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
// See the License for the specific language governing permissions and
// limitations under the License.

use crate::*;
use bytes::Bytes;
use http::header;

#[derive(Debug, Clone)]
pub struct CaseHeaderName(Bytes);

impl CaseHeaderName {
    pub fn new(name: String) -> Self {
        CaseHeaderName(name.into())
    }
}

impl CaseHeaderName {
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    pub fn from_slice(buf: &[u8]) -> Self {
        CaseHeaderName(Bytes::copy_from_slice(buf))
    }
}

/// A trait that converts into case-sensitive header names.
pub trait IntoCaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName;

    /// The name as a [`HeaderName`], for a header whose original case is not kept. The default
    /// parses the bytes of [`Self::into_case_header_name`]; a [`HeaderName`] is used as it is, with
    /// no round trip through bytes (no parse, and no allocation for a name outside the standard
    /// set).
    fn into_header_name(self) -> Result<HeaderName, header::InvalidHeaderName>
    where
        Self: Sized,
    {
        HeaderName::from_bytes(self.into_case_header_name().as_slice())
    }
}

impl IntoCaseHeaderName for CaseHeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        self
    }

    fn into_header_name(self) -> Result<HeaderName, header::InvalidHeaderName> {
        header_name_from_bytes(self.as_slice())
    }
}

impl IntoCaseHeaderName for String {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for &'static str {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self.into())
    }
}

impl IntoCaseHeaderName for HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(&self))
    }

    fn into_header_name(self) -> Result<HeaderName, header::InvalidHeaderName> {
        Ok(self)
    }
}

impl IntoCaseHeaderName for &HeaderName {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(titled_header_name(self))
    }

    fn into_header_name(self) -> Result<HeaderName, header::InvalidHeaderName> {
        Ok(self.clone())
    }
}

impl IntoCaseHeaderName for Bytes {
    fn into_case_header_name(self) -> CaseHeaderName {
        CaseHeaderName(self)
    }

    fn into_header_name(self) -> Result<HeaderName, header::InvalidHeaderName> {
        header_name_from_bytes(&self)
    }
}

/// [`HeaderName::from_bytes`], with the names most messages carry, spelled as peers send them
/// (`Content-Length`, `content-length`), found by their length and a comparison or two. Parsing
/// lowers every byte into a scratch buffer before it looks the name up: about 150 instructions a
/// name, five or more times per response. Any other spelling is parsed.
pub(crate) fn header_name_from_bytes(name: &[u8]) -> Result<HeaderName, header::InvalidHeaderName> {
    use header::*;
    static LEN_3: [(&[u8], HeaderName); 1] = [(b"Age", AGE)];
    static LEN_4: [(&[u8], HeaderName); 4] = [
        (b"Date", DATE),
        (b"Host", HOST),
        (b"ETag", ETAG),
        (b"Vary", VARY),
    ];
    static LEN_6: [(&[u8], HeaderName); 4] = [
        (b"Server", SERVER),
        (b"Accept", ACCEPT),
        (b"Cookie", COOKIE),
        (b"Origin", ORIGIN),
    ];
    static LEN_7: [(&[u8], HeaderName); 3] = [
        (b"Expires", EXPIRES),
        (b"Referer", REFERER),
        (b"Upgrade", UPGRADE),
    ];
    static LEN_10: [(&[u8], HeaderName); 3] = [
        (b"Connection", CONNECTION),
        (b"User-Agent", USER_AGENT),
        (b"Set-Cookie", SET_COOKIE),
    ];
    static LEN_12: [(&[u8], HeaderName); 1] = [(b"Content-Type", CONTENT_TYPE)];
    static LEN_13: [(&[u8], HeaderName); 4] = [
        (b"Last-Modified", LAST_MODIFIED),
        (b"Cache-Control", CACHE_CONTROL),
        (b"Accept-Ranges", ACCEPT_RANGES),
        (b"Authorization", AUTHORIZATION),
    ];
    static LEN_14: [(&[u8], HeaderName); 1] = [(b"Content-Length", CONTENT_LENGTH)];
    static LEN_15: [(&[u8], HeaderName); 2] = [
        (b"Accept-Encoding", ACCEPT_ENCODING),
        (b"Accept-Language", ACCEPT_LANGUAGE),
    ];
    static LEN_16: [(&[u8], HeaderName); 1] = [(b"Content-Encoding", CONTENT_ENCODING)];
    static LEN_17: [(&[u8], HeaderName); 1] = [(b"Transfer-Encoding", TRANSFER_ENCODING)];
    let common: &[(&[u8], HeaderName)] = match name.len() {
        3 => &LEN_3,
        4 => &LEN_4,
        6 => &LEN_6,
        7 => &LEN_7,
        10 => &LEN_10,
        12 => &LEN_12,
        13 => &LEN_13,
        14 => &LEN_14,
        15 => &LEN_15,
        16 => &LEN_16,
        17 => &LEN_17,
        _ => &[],
    };
    for (titled, header_name) in common {
        if name == *titled || name == header_name.as_str().as_bytes() {
            return Ok(header_name.clone());
        }
    }
    HeaderName::from_bytes(name)
}

fn titled_header_name(header_name: &HeaderName) -> Bytes {
    titled_header_name_str(header_name).map_or_else(
        || Bytes::copy_from_slice(header_name.as_str().as_bytes()),
        |s| Bytes::from_static(s.as_bytes()),
    )
}

pub(crate) fn titled_header_name_str(header_name: &HeaderName) -> Option<&'static str> {
    Some(match *header_name {
        header::ACCEPT_RANGES => "Accept-Ranges",
        header::AGE => "Age",
        header::CACHE_CONTROL => "Cache-Control",
        header::CONNECTION => "Connection",
        header::CONTENT_TYPE => "Content-Type",
        header::CONTENT_ENCODING => "Content-Encoding",
        header::CONTENT_LENGTH => "Content-Length",
        header::DATE => "Date",
        header::TRANSFER_ENCODING => "Transfer-Encoding",
        header::HOST => "Host",
        header::SERVER => "Server",
        header::SET_COOKIE => "Set-Cookie",
        // TODO: add more const header here to map to their titled case
        // TODO: automatically upper case the first letter?
        _ => {
            return None;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_are_found_as_the_parser_finds_them() {
        let names = [
            "Age",
            "Date",
            "Host",
            "ETag",
            "Vary",
            "Server",
            "Accept",
            "Cookie",
            "Origin",
            "Expires",
            "Referer",
            "Upgrade",
            "Connection",
            "User-Agent",
            "Set-Cookie",
            "Content-Type",
            "Last-Modified",
            "Cache-Control",
            "Accept-Ranges",
            "Authorization",
            "Content-Length",
            "Accept-Encoding",
            "Accept-Language",
            "Content-Encoding",
            "Transfer-Encoding",
        ];
        for titled in names {
            let parsed = HeaderName::from_bytes(titled.as_bytes()).unwrap();
            // Each spelling listed is found, and as the standard name the parser returns.
            for spelling in [titled.to_string(), titled.to_ascii_lowercase()] {
                let found = header_name_from_bytes(spelling.as_bytes()).unwrap();
                assert_eq!(found, parsed, "{spelling}");
                assert_eq!(found.as_str(), titled.to_ascii_lowercase());
            }
            // Other spellings are parsed.
            let shouted = header_name_from_bytes(titled.to_ascii_uppercase().as_bytes());
            assert_eq!(shouted.unwrap(), parsed);
        }
        // Names of the same lengths that are not listed, and invalid ones, are parsed.
        for other in [
            "Via",
            "X-Id",
            "X-Trace",
            "Keep-Alive",
            "X-Request-Id",
            "Content-Range",
        ] {
            assert_eq!(
                header_name_from_bytes(other.as_bytes()).unwrap(),
                HeaderName::from_bytes(other.as_bytes()).unwrap()
            );
        }
        assert!(header_name_from_bytes(b"Bad Name").is_err());
        assert!(header_name_from_bytes(b"").is_err());
        // The conversions the parsers use go through it.
        let from_bytes = Bytes::from_static(b"Content-Length").into_header_name();
        assert_eq!(from_bytes.unwrap(), header::CONTENT_LENGTH);
        let from_case = CaseHeaderName::from_slice(b"date").into_header_name();
        assert_eq!(from_case.unwrap(), header::DATE);
    }

    #[test]
    fn test_case_header_name() {
        assert_eq!("FoO".into_case_header_name().as_slice(), b"FoO");
        assert_eq!("FoO".to_string().into_case_header_name().as_slice(), b"FoO");
        assert_eq!(header::SERVER.into_case_header_name().as_slice(), b"Server");
    }
}
