//! `backup_manifest`, the JSON file `pg_basebackup` writes beside a backup.
//!
//! The manifest lists every file of the backup with its size and checksum,
//! and the WAL ranges needed to make the backup consistent. cairn checks a
//! base backup against it while the bytes stream into the repository, so a
//! truncated or altered backup is caught before it becomes a snapshot; and it
//! reads the WAL ranges to know which archived segments a backup depends on.
//!
//! Versions 1 (PostgreSQL 13 to 16) and 2 (PostgreSQL 17, which adds
//! `System-Identifier`) are read. As in PostgreSQL's `parse_manifest.c`, the
//! manifest's own `Manifest-Checksum` is the SHA-256 of every byte up to and
//! including the second-to-last newline, i.e. everything but the final line
//! that holds the checksum; the file must end with a newline.

use serde_json::{Map, Value};
use sha2::Digest;

use super::Lsn;

/// The largest `backup_manifest` cairn accepts, in bytes. A manifest is read
/// whole into memory; PostgreSQL's lists about 200 bytes per file, so this
/// is several million files, and anything larger is a broken or hostile
/// server or archive.
pub const MAX_MANIFEST_LEN: usize = 1 << 30;

/// Why a manifest, or a file checked against it, was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// The bytes are not valid JSON.
    #[error("backup_manifest is not valid JSON (line {line}, column {column}): {message}")]
    Json {
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's description.
        message: String,
    },
    /// A field is missing, has the wrong type or an invalid value; `field`
    /// is a path such as `Files[3].Size`, with the file's path where known.
    #[error("backup_manifest field {field}: {reason}")]
    Invalid {
        /// Where in the manifest.
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// A manifest version this build does not read.
    #[error("backup_manifest version {got} is not supported (cairn reads versions 1 and 2)")]
    UnsupportedVersion {
        /// The version found.
        got: String,
    },
    /// The manifest's bytes do not match its `Manifest-Checksum`: it was
    /// altered or truncated after PostgreSQL wrote it.
    #[error("backup_manifest checksum mismatch: Manifest-Checksum says {expected}, contents hash to {got}")]
    ManifestChecksumMismatch {
        /// The recorded SHA-256, hex.
        expected: String,
        /// The SHA-256 of the contents, hex.
        got: String,
    },
    /// A backed-up file does not have the size the manifest lists.
    #[error("file {path:?}: size {got} bytes, backup_manifest says {expected}")]
    FileSizeMismatch {
        /// The file's path within the backup.
        path: String,
        /// The size in the manifest.
        expected: u64,
        /// The size seen.
        got: u64,
    },
    /// A backed-up file's checksum differs from the manifest's.
    #[error("file {path:?}: {algorithm} checksum {got}, backup_manifest says {expected}")]
    FileChecksumMismatch {
        /// The file's path within the backup.
        path: String,
        /// The algorithm's manifest name.
        algorithm: &'static str,
        /// The checksum in the manifest, hex.
        expected: String,
        /// The checksum of the bytes seen, hex.
        got: String,
    },
}

/// A per-file checksum algorithm (`pg_basebackup --manifest-checksums`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChecksumAlgorithm {
    /// No checksum; only the size is checked.
    None,
    /// CRC-32C, PostgreSQL's default; recorded as the 4 bytes of the CRC in
    /// little-endian order.
    Crc32c,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl ChecksumAlgorithm {
    /// Parses a `Checksum-Algorithm` value; PostgreSQL compares names
    /// case-insensitively.
    pub fn parse(name: &str) -> Option<ChecksumAlgorithm> {
        [
            ChecksumAlgorithm::None,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Sha224,
            ChecksumAlgorithm::Sha256,
            ChecksumAlgorithm::Sha384,
            ChecksumAlgorithm::Sha512,
        ]
        .into_iter()
        .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    /// The name PostgreSQL writes.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumAlgorithm::None => "NONE",
            ChecksumAlgorithm::Crc32c => "CRC32C",
            ChecksumAlgorithm::Sha224 => "SHA224",
            ChecksumAlgorithm::Sha256 => "SHA256",
            ChecksumAlgorithm::Sha384 => "SHA384",
            ChecksumAlgorithm::Sha512 => "SHA512",
        }
    }

    /// The checksum's length in bytes (0 for `None`).
    pub fn digest_len(self) -> usize {
        match self {
            ChecksumAlgorithm::None => 0,
            ChecksumAlgorithm::Crc32c => 4,
            ChecksumAlgorithm::Sha224 => 28,
            ChecksumAlgorithm::Sha256 => 32,
            ChecksumAlgorithm::Sha384 => 48,
            ChecksumAlgorithm::Sha512 => 64,
        }
    }
}

/// One file entry of the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestFile {
    /// The path relative to the data directory, as raw bytes: from `Path`,
    /// or hex-decoded from `Encoded-Path` for names that are not UTF-8.
    pub path: Vec<u8>,
    /// `Size` in bytes.
    pub size: u64,
    /// `Last-Modified` as written (e.g. `2024-01-01 00:00:00 GMT`), if present.
    pub last_modified: Option<String>,
    /// `Checksum-Algorithm` (`None` when absent).
    pub checksum_algorithm: ChecksumAlgorithm,
    /// The decoded `Checksum` bytes, `digest_len()` long.
    pub checksum: Vec<u8>,
}

impl ManifestFile {
    /// The path for messages, with invalid UTF-8 replaced.
    pub fn path_lossy(&self) -> String {
        String::from_utf8_lossy(&self.path).into_owned()
    }
}

/// A range of WAL the backup needs (`WAL-Ranges`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalRange {
    /// The timeline.
    pub timeline: u32,
    /// `Start-LSN`.
    pub start: Lsn,
    /// `End-LSN`.
    pub end: Lsn,
}

/// A parsed and checksum-verified `backup_manifest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupManifest {
    /// `PostgreSQL-Backup-Manifest-Version`: 1 or 2.
    pub version: u32,
    /// `System-Identifier` (version 2 only).
    pub system_id: Option<u64>,
    /// The files, in manifest order.
    pub files: Vec<ManifestFile>,
    /// The WAL ranges, in manifest order.
    pub wal_ranges: Vec<WalRange>,
    /// The verified `Manifest-Checksum` (SHA-256).
    pub checksum: [u8; 32],
}

fn invalid(field: impl Into<String>, reason: impl Into<String>) -> ManifestError {
    ManifestError::Invalid { field: field.into(), reason: reason.into() }
}

/// Looks up `key` in `obj`, naming `field.key` in the error if it is absent.
fn require<'v>(obj: &'v Map<String, Value>, field: &str, key: &str) -> Result<&'v Value, ManifestError> {
    obj.get(key).ok_or_else(|| invalid(format!("{field}.{key}"), "missing"))
}

fn as_str<'v>(v: &'v Value, field: &str) -> Result<&'v str, ManifestError> {
    v.as_str().ok_or_else(|| invalid(field, "expected a string"))
}

fn as_u64(v: &Value, field: &str) -> Result<u64, ManifestError> {
    v.as_u64().ok_or_else(|| invalid(field, "expected a non-negative integer"))
}

fn check_keys(obj: &Map<String, Value>, field: &str, allowed: &[&str]) -> Result<(), ManifestError> {
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(invalid(format!("{field}.{k}"), "unexpected field")),
        None => Ok(()),
    }
}

impl BackupManifest {
    /// Parses a manifest and verifies its `Manifest-Checksum`.
    pub fn parse(bytes: &[u8]) -> Result<BackupManifest, ManifestError> {
        let root: Value = serde_json::from_slice(bytes).map_err(|e| ManifestError::Json {
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        })?;
        let root = root.as_object().ok_or_else(|| invalid("(top level)", "expected an object"))?;
        let version_value = require(root, "(top level)", "PostgreSQL-Backup-Manifest-Version")?;
        let version = match version_value.as_u64() {
            Some(v @ (1 | 2)) => v as u32,
            _ => return Err(ManifestError::UnsupportedVersion { got: version_value.to_string() }),
        };
        check_keys(
            root,
            "(top level)",
            &["PostgreSQL-Backup-Manifest-Version", "System-Identifier", "Files", "WAL-Ranges", "Manifest-Checksum"],
        )?;
        let system_id = match (version, root.get("System-Identifier")) {
            (2, Some(v)) => Some(as_u64(v, "System-Identifier")?),
            (2, None) => return Err(invalid("System-Identifier", "missing (required in version 2)")),
            (_, Some(_)) => return Err(invalid("System-Identifier", "not allowed in version 1")),
            (_, None) => None,
        };
        let files = require(root, "(top level)", "Files")?
            .as_array()
            .ok_or_else(|| invalid("Files", "expected an array"))?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_file(v, &format!("Files[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let wal_ranges = require(root, "(top level)", "WAL-Ranges")?
            .as_array()
            .ok_or_else(|| invalid("WAL-Ranges", "expected an array"))?
            .iter()
            .enumerate()
            .map(|(i, v)| parse_wal_range(v, &format!("WAL-Ranges[{i}]")))
            .collect::<Result<Vec<_>, _>>()?;
        let recorded = as_str(require(root, "(top level)", "Manifest-Checksum")?, "Manifest-Checksum")?;
        let mut checksum = [0u8; 32];
        hex::decode_to_slice(recorded, &mut checksum)
            .map_err(|_| invalid("Manifest-Checksum", format!("expected 64 hexadecimal digits, got {recorded:?}")))?;
        let actual = manifest_checksum(bytes)?;
        if actual != checksum {
            return Err(ManifestError::ManifestChecksumMismatch {
                expected: recorded.to_owned(),
                got: hex::encode(actual),
            });
        }
        Ok(BackupManifest { version, system_id, files, wal_ranges, checksum })
    }

    /// The entry for `path` (relative to the data directory), if listed.
    pub fn file(&self, path: &[u8]) -> Option<&ManifestFile> {
        self.files.iter().find(|f| f.path == path)
    }
}

/// Computes the SHA-256 that `Manifest-Checksum` must hold: over the bytes
/// up to and including the second-to-last newline. Fails, as PostgreSQL
/// does, when there are fewer than two lines or the last is not
/// newline-terminated.
pub fn manifest_checksum(bytes: &[u8]) -> Result<[u8; 32], ManifestError> {
    if bytes.last() != Some(&b'\n') {
        return Err(invalid("(file)", "last line not newline-terminated"));
    }
    let before_last = bytes.get(..bytes.len() - 1).unwrap_or(&[]);
    let Some(penultimate) = before_last.iter().rposition(|&b| b == b'\n') else {
        return Err(invalid("(file)", "expected at least 2 lines"));
    };
    let covered = bytes.get(..=penultimate).unwrap_or(&[]);
    Ok(sha2::Sha256::digest(covered).into())
}

fn parse_file(v: &Value, field: &str) -> Result<ManifestFile, ManifestError> {
    let obj = v.as_object().ok_or_else(|| invalid(field, "expected an object"))?;
    let path = match (obj.get("Path"), obj.get("Encoded-Path")) {
        (Some(p), None) => as_str(p, &format!("{field}.Path"))?.as_bytes().to_vec(),
        (None, Some(e)) => {
            let e = as_str(e, &format!("{field}.Encoded-Path"))?;
            hex::decode(e).map_err(|_| invalid(format!("{field}.Encoded-Path"), "expected hexadecimal digits"))?
        }
        (Some(_), Some(_)) => return Err(invalid(field, "both Path and Encoded-Path")),
        (None, None) => return Err(invalid(field, "missing Path")),
    };
    // From here on, name the file in errors: that is what an operator greps for.
    let field = format!("{field} ({:?})", String::from_utf8_lossy(&path));
    check_keys(obj, &field, &["Path", "Encoded-Path", "Size", "Last-Modified", "Checksum-Algorithm", "Checksum"])?;
    let size = as_u64(require(obj, &field, "Size")?, &format!("{field}.Size"))?;
    let last_modified = obj
        .get("Last-Modified")
        .map(|v| as_str(v, &format!("{field}.Last-Modified")).map(str::to_owned))
        .transpose()?;
    let checksum_algorithm = match obj.get("Checksum-Algorithm") {
        None => ChecksumAlgorithm::None,
        Some(v) => {
            let name = as_str(v, &format!("{field}.Checksum-Algorithm"))?;
            ChecksumAlgorithm::parse(name)
                .ok_or_else(|| invalid(format!("{field}.Checksum-Algorithm"), format!("unknown algorithm {name:?}")))?
        }
    };
    let checksum = match obj.get("Checksum") {
        None => Vec::new(),
        Some(v) => {
            let text = as_str(v, &format!("{field}.Checksum"))?;
            hex::decode(text).map_err(|_| invalid(format!("{field}.Checksum"), "expected hexadecimal digits"))?
        }
    };
    if checksum.len() != checksum_algorithm.digest_len() {
        return Err(invalid(
            format!("{field}.Checksum"),
            format!(
                "{} bytes, but {} checksums are {} bytes",
                checksum.len(),
                checksum_algorithm.name(),
                checksum_algorithm.digest_len()
            ),
        ));
    }
    Ok(ManifestFile { path, size, last_modified, checksum_algorithm, checksum })
}

fn parse_wal_range(v: &Value, field: &str) -> Result<WalRange, ManifestError> {
    let obj = v.as_object().ok_or_else(|| invalid(field, "expected an object"))?;
    check_keys(obj, field, &["Timeline", "Start-LSN", "End-LSN"])?;
    let timeline = as_u64(require(obj, field, "Timeline")?, &format!("{field}.Timeline"))?;
    let timeline = u32::try_from(timeline)
        .ok()
        .filter(|&t| t != 0)
        .ok_or_else(|| invalid(format!("{field}.Timeline"), format!("{timeline} is not a timeline id")))?;
    let lsn = |key: &str| -> Result<Lsn, ManifestError> {
        let name = format!("{field}.{key}");
        let text = as_str(require(obj, field, key)?, &name)?;
        text.parse::<Lsn>().map_err(|e| invalid(name, e.to_string()))
    };
    let (start, end) = (lsn("Start-LSN")?, lsn("End-LSN")?);
    if end < start {
        return Err(invalid(field, format!("End-LSN {end} is before Start-LSN {start}")));
    }
    Ok(WalRange { timeline, start, end })
}

/// The running checksum state of a [`FileChecker`].
#[derive(Debug, Clone)]
enum Hasher {
    None,
    Crc32c(u32),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

/// Checks one file's bytes against its manifest entry as they stream past,
/// without holding the file.
#[derive(Debug, Clone)]
pub struct FileChecker {
    path: String,
    algorithm: ChecksumAlgorithm,
    expected_size: u64,
    expected_checksum: Vec<u8>,
    size: u64,
    hasher: Hasher,
}

impl FileChecker {
    /// Starts checking a file listed as `file`.
    pub fn new(file: &ManifestFile) -> FileChecker {
        let hasher = match file.checksum_algorithm {
            ChecksumAlgorithm::None => Hasher::None,
            ChecksumAlgorithm::Crc32c => Hasher::Crc32c(0),
            ChecksumAlgorithm::Sha224 => Hasher::Sha224(sha2::Sha224::new()),
            ChecksumAlgorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            ChecksumAlgorithm::Sha384 => Hasher::Sha384(sha2::Sha384::new()),
            ChecksumAlgorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        };
        FileChecker {
            path: file.path_lossy(),
            algorithm: file.checksum_algorithm,
            expected_size: file.size,
            expected_checksum: file.checksum.clone(),
            size: 0,
            hasher,
        }
    }

    /// Feeds the next bytes of the file.
    pub fn update(&mut self, data: &[u8]) {
        self.size = self.size.saturating_add(data.len() as u64);
        match &mut self.hasher {
            Hasher::None => {}
            Hasher::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, data),
            Hasher::Sha224(h) => h.update(data),
            Hasher::Sha256(h) => h.update(data),
            Hasher::Sha384(h) => h.update(data),
            Hasher::Sha512(h) => h.update(data),
        }
    }

    /// Ends the file: fails, naming the path, if its size or checksum differs
    /// from the manifest's.
    pub fn finish(self) -> Result<(), ManifestError> {
        if self.size != self.expected_size {
            return Err(ManifestError::FileSizeMismatch {
                path: self.path,
                expected: self.expected_size,
                got: self.size,
            });
        }
        let got: Vec<u8> = match self.hasher {
            Hasher::None => Vec::new(),
            Hasher::Crc32c(crc) => crc.to_le_bytes().to_vec(),
            Hasher::Sha224(h) => h.finalize().to_vec(),
            Hasher::Sha256(h) => h.finalize().to_vec(),
            Hasher::Sha384(h) => h.finalize().to_vec(),
            Hasher::Sha512(h) => h.finalize().to_vec(),
        };
        if got != self.expected_checksum {
            return Err(ManifestError::FileChecksumMismatch {
                path: self.path,
                algorithm: self.algorithm.name(),
                expected: hex::encode(&self.expected_checksum),
                got: hex::encode(got),
            });
        }
        Ok(())
    }
}
