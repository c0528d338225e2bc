//! A model file's bytes, memory-mapped so that loading touches only what it reads: the
//! readers parse the file's structure in place, and each weight is copied once, into the
//! f32 layout the model keeps, with the copied pages handed back as it goes ([`Pages`]).
//! Touched pages of a mapping count in the process's resident memory until they are let
//! go, so without that a loaded model would cost the file's size twice.
//!
//! A file that cannot be mapped (a pipe, a special file) is read instead; so is anything
//! the caller already holds in memory ([`FileBytes::from`]).

#![allow(unsafe_code)]

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use memmap2::Mmap;

/// The bytes of a model file: a slice of a mapping, or read into memory.
#[derive(Clone, Debug)]
pub struct FileBytes {
    bytes: Bytes,
    pages: Pages,
}

/// The mapping a file's bytes live in, if they were mapped: [`Pages::release`] lets the
/// kernel drop pages that have been copied out, and [`f32s`] reads weights from the file
/// itself. Read bytes have none.
#[derive(Clone, Debug, Default)]
pub struct Pages(Option<Arc<Mapping>>);

/// A mapped file and the open file it maps.
#[derive(Debug)]
struct Mapping {
    map: Mmap,
    file: std::fs::File,
}

/// `Bytes` over a shared mapping (`Bytes::from_owner` takes `AsRef<[u8]>`).
struct Shared(Arc<Mapping>);

impl AsRef<[u8]> for Shared {
    fn as_ref(&self) -> &[u8] {
        &self.0.map
    }
}

impl FileBytes {
    /// The file at `path`, mapped, or read where it cannot be mapped.
    pub fn open(path: &Path) -> std::io::Result<FileBytes> {
        let file = std::fs::File::open(path)?;
        read_ahead(&file);
        // SAFETY: the mapping is read-only and private to this process. Its contents change
        // only if another program rewrites the file in place while it is being loaded (a
        // truncation would fault); convscope's own writer replaces files by renaming, and a
        // loaded model keeps no reference into the mapping.
        match unsafe { Mmap::map(&file) } {
            Ok(map) => {
                let map = Arc::new(Mapping { map, file });
                Ok(FileBytes {
                    bytes: Bytes::from_owner(Shared(Arc::clone(&map))),
                    pages: Pages(Some(map)),
                })
            }
            Err(_) => Ok(FileBytes::from(std::fs::read(path)?)),
        }
    }

    /// The bytes, shared: slices of them keep the mapping alive and copy nothing.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The mapping the bytes are in, to release copied parts of them.
    pub fn pages(&self) -> &Pages {
        &self.pages
    }

    /// A part of the bytes, in the same pages.
    pub fn slice(&self, range: std::ops::Range<usize>) -> FileBytes {
        FileBytes { bytes: self.bytes.slice(range), pages: self.pages.clone() }
    }

    /// Whether the bytes are a mapping of the file (rather than read into memory).
    pub fn is_mapped(&self) -> bool {
        self.pages.0.is_some()
    }
}

/// Tells the kernel the file will be read front to back, so it reads ahead in large steps:
/// a weight's one `pread` of hundreds of MB from a file not in the page cache otherwise
/// came in small synchronous reads. vgg11_bn's 531 MB file, dropped from the cache before
/// each run (`dd iflag=nocache count=0`), five runs of `convscope summary`: 0.22–2.08 s
/// without, 0.24–0.27 s with (`cat` of the file 0.18–0.19 s). Asking for the whole file
/// at once as well (`POSIX_FADV_WILLNEED`) measured 0.24–1.50 s. Advice only: a failure
/// changes nothing.
fn read_ahead(file: &std::fs::File) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for as long as `file` lives; the call only sets
        // the kernel's read-ahead for it.
        let _ = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL) };
    }
    #[cfg(not(target_os = "linux"))]
    let _ = file;
}

impl From<Vec<u8>> for FileBytes {
    fn from(bytes: Vec<u8>) -> FileBytes {
        FileBytes { bytes: Bytes::from(bytes), pages: Pages::default() }
    }
}

impl std::ops::Deref for FileBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Pages {
    /// Lets the kernel drop the resident pages under `part`, which has been copied out: a
    /// later read faults them in again from the file. Does nothing for bytes that are not
    /// in this mapping.
    pub fn release(&self, part: &[u8]) {
        #[cfg(unix)]
        if let Some(mapping) = &self.0
            && let Some(offset) = mapping.offset_of(part)
        {
            let map = &mapping.map;
            // SAFETY: the range lies inside the mapping, which is read-only and backed by
            // the file: dropping its pages loses nothing, since every later read of them
            // (through any slice still alive) is served from the file again. Pages at the
            // ends shared with neighbouring data are dropped too, equally harmlessly. A
            // failure only means the pages stay resident.
            let _ = unsafe {
                map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, offset, part.len())
            };
        }
    }
}

impl Mapping {
    /// Where `part` starts in the file, if it lies inside the mapping.
    fn offset_of(&self, part: &[u8]) -> Option<usize> {
        let offset = (part.as_ptr() as usize).checked_sub(self.map.as_ptr() as usize)?;
        offset.checked_add(part.len()).is_some_and(|end| end <= self.map.len()).then_some(offset)
    }

    /// The little-endian f32s of `part` (a whole number of them), read from the file
    /// straight into their vector: one copy, from the page cache, as `cat` makes, where
    /// copying out of the mapping also faulted its pages in (and out again). `None` where
    /// that cannot be done: a big-endian machine, a part outside the mapping, a failed read.
    #[cfg(all(unix, target_endian = "little"))]
    fn read_f32s(&self, part: &[u8]) -> Option<Vec<f32>> {
        use rayon::prelude::*;
        let offset = self.offset_of(part)?;
        let count = part.len() / 4;
        let mut out = weight_buffer(count);
        let read_all = out.spare_capacity_mut()[..count]
            .par_chunks_mut(READ_CHUNK)
            .enumerate()
            .all(|(i, chunk)| self.read_into(chunk, offset + i * READ_CHUNK * 4));
        if !read_all {
            return None;
        }
        // SAFETY: every chunk of the first `count` floats was written by `read_into`, and
        // every bit pattern is an f32; the file's little-endian order is this machine's.
        unsafe { out.set_len(count) };
        Some(out)
    }

    /// Fills `chunk` with the file's bytes from `offset` on; false where the file ended
    /// first (it shrank under us) or a read failed.
    #[cfg(all(unix, target_endian = "little"))]
    fn read_into(&self, chunk: &mut [std::mem::MaybeUninit<f32>], offset: usize) -> bool {
        use std::os::fd::AsRawFd;
        let bytes = chunk.len() * 4;
        let start = chunk.as_mut_ptr().cast::<u8>();
        let mut done = 0;
        while done < bytes {
            let Ok(at) = libc::off_t::try_from(offset + done) else { return false };
            // SAFETY: `start..start + bytes` is `chunk`, borrowed mutably: the kernel writes
            // it and nothing reads it meanwhile.
            let read = unsafe {
                libc::pread(self.file.as_raw_fd(), start.add(done).cast(), bytes - done, at)
            };
            match read {
                n if n > 0 => done += n as usize,
                _ => return false,
            }
        }
        true
    }

    #[cfg(not(all(unix, target_endian = "little")))]
    fn read_f32s(&self, _: &[u8]) -> Option<Vec<f32>> {
        None
    }
}

/// Floats read per task (1 MB) when a weight is read from the file, the tasks spread over
/// the pool: the kernel's copy and the faults of the fresh pages it fills are most of a big
/// model's load, and both run on every core that way. `convscope summary`, 2-core AMD EPYC
/// VM (session 31), five runs each alternating: vgg11_bn 0.36–0.54 s in one read per
/// weight, 0.17–0.22 s in tasks (`cat` 0.06 s); resnet50 0.05–0.07 → 0.03–0.04 s (its
/// weights of 1–9 MB split too). Huge pages for every weight measured 0.08–0.62 s.
const READ_CHUNK: usize = 1 << 18;

/// Floats decoded per block: a block's pages are released once it is copied, so at most
/// this much of a mapped tensor is resident besides its copy.
pub const BLOCK: usize = 1 << 20;

/// Calls `f` with the little-endian f32s of `bytes` (a whole number of them), in blocks of
/// `block` floats (the last may be shorter) with the index of each block's first float,
/// releasing each block's pages of `pages` once `f` has it.
pub fn f32_blocks(bytes: &[u8], pages: &Pages, block: usize, mut f: impl FnMut(usize, &[f32])) {
    let mut buffer = Vec::with_capacity(block.min(bytes.len() / 4));
    for (i, chunk) in bytes.chunks(block.max(1) * 4).enumerate() {
        buffer.clear();
        decode_into(&mut buffer, chunk);
        f(i * block.max(1), &buffer);
        pages.release(chunk);
    }
}

/// Appends the little-endian f32s of `bytes` (a whole number of them) to `out`.
fn decode_into(out: &mut Vec<f32>, bytes: &[u8]) {
    out.extend(bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])));
}

/// An empty vector with room for `len` floats, on huge pages where the kernel has them
/// (Linux's transparent huge pages, on request) unless it is larger than
/// [`HUGE_WEIGHTS_MAX`]: a weight is written once, and with 4 KB pages most of a load's
/// time was the page faults of its fresh memory.
pub fn weight_buffer(len: usize) -> Vec<f32> {
    let buffer: Vec<f32> = Vec::with_capacity(len);
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = (buffer.as_ptr() as usize).next_multiple_of(HUGE);
        let end = (buffer.as_ptr() as usize + len * 4) / HUGE * HUGE;
        if end > start && len * 4 <= HUGE_WEIGHTS_MAX {
            // SAFETY: the range lies inside the vector's allocation, which nothing has
            // touched yet; the advice only chooses the page size that backs it, never its
            // contents. A failure leaves ordinary pages.
            let _ = unsafe {
                libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_HUGEPAGE)
            };
        }
    }
    buffer
}

/// The largest weight [`weight_buffer`] asks huge pages for, in bytes. Above it, a buffer
/// is a mapping of its own (the allocator maps anything over 256 MB apart), and on a 2-core
/// VM (Sapphire Rapids, session 30) faulting in vgg11_bn's 411 MB classifier on huge pages
/// took from 0.2 to 4.3 s in ten loads of the same cached file, the kernel zeroing the fresh
/// pages (`clear_page_erms`, 87% of the samples); on 4 KB pages its load took 0.26–0.30 s.
/// Smaller weights kept their huge pages (resnet50's load 0.04–0.10 s with, 0.05–0.07 s
/// without). The cost: vgg11_bn's forward 3–5% slower (streaming 411 MB through 4 KB pages).
#[cfg(target_os = "linux")]
const HUGE_WEIGHTS_MAX: usize = 256 << 20;

/// The little-endian f32s of `bytes`, copied once: read from the file where they lie in a
/// mapping, else decoded from memory, releasing the copied pages of `pages`.
pub fn f32s(bytes: &[u8], pages: &Pages) -> Vec<f32> {
    if let Some(values) = pages.0.as_ref().and_then(|mapping| mapping.read_f32s(bytes)) {
        return values;
    }
    let mut out = weight_buffer(bytes.len() / 4);
    for chunk in bytes.chunks(BLOCK * 4) {
        decode_into(&mut out, chunk);
        pages.release(chunk);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_read_in_several_tasks_arrive_whole_and_in_order() {
        let count = READ_CHUNK * 2 + 12_345;
        let values: Vec<f32> = (0..count).map(|i| (i % 100_003) as f32 - 0.25).collect();
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        // An odd offset, so no task starts on a page or a float of the file.
        std::fs::write(&path, [&[9u8][..], &raw].concat()).unwrap();
        let mapped = FileBytes::open(&path).unwrap();
        assert_eq!(f32s(&mapped.bytes().slice(1..), mapped.pages()), values);
    }

    #[test]
    fn mapped_and_read_bytes_decode_alike_and_survive_release() {
        let values: Vec<f32> = (0..3000).map(|i| i as f32 * 0.5 - 7.0).collect();
        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("w.bin");
        std::fs::write(&path, [&[1u8, 2, 3][..], &raw].concat()).unwrap();
        let mapped = FileBytes::open(&path).unwrap();
        assert!(mapped.is_mapped());
        // An unaligned slice, as a tensor inside a protobuf is.
        let part = mapped.bytes().slice(3..);
        assert_eq!(f32s(&part, mapped.pages()), values);
        // Released pages read back the same from the file.
        assert_eq!(f32s(&part, mapped.pages()), values);
        let read = FileBytes::from(std::fs::read(&path).unwrap());
        assert!(!read.is_mapped());
        assert_eq!(f32s(&read[3..], read.pages()), values);
        let mut starts = Vec::new();
        f32_blocks(&part, mapped.pages(), 1024, |start, block| starts.push((start, block.len())));
        assert_eq!(starts, vec![(0, 1024), (1024, 1024), (2048, 952)]);
    }
}
