//! An incremental `Transfer-Encoding: chunked` decoder, for test code that reads raw responses off a socket.

use std::fmt;

/// Longest accepted chunk-size or trailer line in a chunked body.
const MAX_CHUNK_LINE: usize = 4096;

/// Malformed chunked framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(&'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ParseError {}

/// Position of the first CRLF in `buf`.
fn find_crlf(buf: &[u8]) -> Option<usize> {
    buf.windows(2).position(|w| w == b"\r\n")
}

/// Incremental decoder for `Transfer-Encoding: chunked` bodies (RFC 9112 section 7.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkedDecoder {
    state: ChunkState,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// After the last chunk: trailer lines until a blank line.
    Trailer,
    Done,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        ChunkedDecoder::new()
    }
}

impl ChunkedDecoder {
    pub fn new() -> ChunkedDecoder {
        ChunkedDecoder {
            state: ChunkState::Size,
        }
    }

    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == ChunkState::Done
    }

    /// Decodes as much of `input` as possible, appending body data to `out`.
    ///
    /// Returns how many bytes of `input` were consumed; unconsumed bytes (an incomplete line, or
    /// whatever follows the body) must be presented again with more data appended.
    pub fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ParseError> {
        let mut pos = 0;
        loop {
            let rest = &input[pos..];
            match self.state {
                ChunkState::Done => return Ok(pos),
                ChunkState::Size => {
                    let Some(line_len) = find_crlf(rest) else {
                        return incomplete_line(rest, pos);
                    };
                    let size = parse_chunk_size(&rest[..line_len])?;
                    pos += line_len + 2;
                    self.state = if size == 0 {
                        ChunkState::Trailer
                    } else {
                        ChunkState::Data(size)
                    };
                }
                ChunkState::Data(remaining) => {
                    if rest.is_empty() {
                        return Ok(pos);
                    }
                    let take = rest
                        .len()
                        .min(usize::try_from(remaining).unwrap_or(usize::MAX));
                    out.extend_from_slice(&rest[..take]);
                    pos += take;
                    let left = remaining - take as u64;
                    self.state = if left == 0 {
                        ChunkState::DataEnd
                    } else {
                        ChunkState::Data(left)
                    };
                }
                ChunkState::DataEnd => {
                    if rest.len() < 2 {
                        if rest.first().is_some_and(|&c| c != b'\r') {
                            return Err(ParseError("chunk data not followed by CRLF"));
                        }
                        return Ok(pos);
                    }
                    if &rest[..2] != b"\r\n" {
                        return Err(ParseError("chunk data not followed by CRLF"));
                    }
                    pos += 2;
                    self.state = ChunkState::Size;
                }
                ChunkState::Trailer => {
                    let Some(line_len) = find_crlf(rest) else {
                        return incomplete_line(rest, pos);
                    };
                    pos += line_len + 2;
                    if line_len == 0 {
                        self.state = ChunkState::Done;
                    }
                }
            }
        }
    }
}

/// Waits for the rest of a line unless it is already too long to be sane.
fn incomplete_line(rest: &[u8], pos: usize) -> Result<usize, ParseError> {
    if rest.len() > MAX_CHUNK_LINE {
        Err(ParseError("chunk line too long"))
    } else {
        Ok(pos)
    }
}

/// Parses `1a;ext=1` into 26.
fn parse_chunk_size(line: &[u8]) -> Result<u64, ParseError> {
    let digits_end = line.iter().position(|&c| c == b';').unwrap_or(line.len());
    let digits = line[..digits_end].trim_ascii();
    if digits.is_empty() || digits.len() > 16 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(ParseError("invalid chunk size"));
    }
    let mut size = 0u64;
    for &c in digits {
        // Invariant: `c` is an ASCII hex digit (checked above) and at most 16 digits fit in u64.
        let digit = (c as char).to_digit(16).unwrap_or_default();
        size = (size << 4) | u64::from(digit);
    }
    Ok(size)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests unwrap freely
mod tests {
    use super::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, usize, bool), ParseError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let consumed = decoder.decode(input, &mut out)?;
        Ok((out, consumed, decoder.is_done()))
    }

    #[test]
    fn chunked_whole_body() {
        let input = b"5\r\nhello\r\n7\r\n, world\r\n0\r\n\r\nGET / HTTP/1.1\r\n";
        let (out, consumed, done) = decode_all(input).unwrap();
        assert_eq!(out, b"hello, world");
        assert!(done);
        assert_eq!(
            &input[consumed..],
            b"GET / HTTP/1.1\r\n",
            "must stop right after the body"
        );
    }

    #[test]
    fn chunked_byte_by_byte() {
        let input = b"A;name=value\r\n0123456789\r\n1\r\nx\r\n0\r\nx-trailer: 1\r\n\r\n";
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut pending = Vec::new();
        for &byte in input.iter() {
            assert!(!decoder.is_done());
            pending.push(byte);
            let consumed = decoder.decode(&pending, &mut out).unwrap();
            pending.drain(..consumed);
        }
        assert!(decoder.is_done());
        assert!(pending.is_empty());
        assert_eq!(out, b"0123456789x");
    }

    #[test]
    fn chunked_size_is_hex_and_case_insensitive() {
        let body = vec![b'z'; 0x1f];
        let mut input = b"1F\r\n".to_vec();
        input.extend_from_slice(&body);
        input.extend_from_slice(b"\r\n0\r\n\r\n");
        let (out, _, done) = decode_all(&input).unwrap();
        assert_eq!(out, body);
        assert!(done);
    }

    #[test]
    fn chunked_incomplete_waits() {
        let (out, consumed, done) = decode_all(b"5\r\nhel").unwrap();
        assert_eq!(out, b"hel");
        assert_eq!(consumed, 6);
        assert!(!done);
        let (out, consumed, done) = decode_all(b"5").unwrap();
        assert!(out.is_empty());
        assert_eq!(consumed, 0);
        assert!(!done);
    }

    #[test]
    fn chunked_rejects_garbage() {
        assert_eq!(
            decode_all(b"zz\r\n").unwrap_err(),
            ParseError("invalid chunk size")
        );
        assert_eq!(
            decode_all(b"+5\r\nhello\r\n").unwrap_err(),
            ParseError("invalid chunk size")
        );
        assert_eq!(
            decode_all(b"\r\n").unwrap_err(),
            ParseError("invalid chunk size")
        );
        assert_eq!(
            decode_all(b"11111111111111111\r\n").unwrap_err(),
            ParseError("invalid chunk size")
        );
        assert_eq!(
            decode_all(b"3\r\nabcX\r\n").unwrap_err(),
            ParseError("chunk data not followed by CRLF")
        );
        assert_eq!(
            decode_all(&[b'1'; MAX_CHUNK_LINE + 1]).unwrap_err(),
            ParseError("chunk line too long")
        );
    }
}
