//! The text of PDF files, through the `pdf-extract` crate (on `lopdf`).
//!
//! That crate panics on some malformed files and could loop on hostile ones, so every file is read
//! on a thread of its own: a panic becomes an error naming the file's problem, and a file that takes
//! longer than [`READ_TIMEOUT`] is given up (its thread is left to finish on its own, and at most
//! [`MAX_READERS`] such threads run at once). A PDF without text (scanned pages) is an error too:
//! COGO does no OCR.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Largest PDF file read.
pub const MAX_PDF_BYTES: u64 = 32 * 1024 * 1024;
/// Largest text kept from one PDF.
pub const MAX_PDF_TEXT_BYTES: usize = 4 * 1024 * 1024;
/// Longest one file is read for.
pub const READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Most reader threads alive at once (files that timed out still count until their thread ends).
pub const MAX_READERS: usize = 4;

/// The name of the reader threads (their panics are not printed: they are reported as errors).
const THREAD_NAME: &str = "cogo-pdf-reader";

static READERS: AtomicUsize = AtomicUsize::new(0);

/// A PDF's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PdfText {
    /// The text of its pages, blank runs collapsed to one empty line.
    pub text: String,
    /// Its first line of text, as a title.
    pub title: Option<String>,
}

/// Whether `bytes` start like a PDF file.
pub fn looks_like_pdf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"%PDF-")
}

/// Reads the text of the PDF file `bytes`; the error says what is wrong with the file.
pub async fn read_text(bytes: Vec<u8>) -> Result<PdfText, String> {
    if bytes.len() as u64 > MAX_PDF_BYTES {
        return Err(format!("{} bytes, over the PDF limit of {MAX_PDF_BYTES}", bytes.len()));
    }
    if !looks_like_pdf(&bytes) {
        return Err("not a PDF file (it does not start with %PDF-)".into());
    }
    let slot = ReaderSlot::take().ok_or_else(|| {
        format!("{MAX_READERS} PDF files are still being read after {READ_TIMEOUT:?}; try again later")
    })?;
    quiet_reader_panics();
    let (sender, receiver) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            let _slot = slot;
            let outcome = std::panic::catch_unwind(|| pdf_extract::extract_text_from_mem(&bytes));
            let _ = sender.send(outcome);
        })
        .map_err(|err| format!("cannot start a PDF reader: {err}"))?;
    let text = match tokio::time::timeout(READ_TIMEOUT, receiver).await {
        Err(_) => return Err(format!("reading its text took longer than {} s", READ_TIMEOUT.as_secs())),
        Ok(Err(_)) => return Err("the PDF reader stopped".into()),
        Ok(Ok(Err(panic))) => return Err(format!("not a readable PDF ({})", panic_text(panic.as_ref()))),
        Ok(Ok(Ok(Err(err)))) => return Err(format!("not a readable PDF: {err}")),
        Ok(Ok(Ok(Ok(text)))) => text,
    };
    let text = tidy(&text);
    if text.trim().is_empty() {
        return Err("the PDF has no text (scanned pages need OCR, which COGO does not do)".into());
    }
    if text.len() > MAX_PDF_TEXT_BYTES {
        return Err(format!("its text is {} bytes, over the limit of {MAX_PDF_TEXT_BYTES}", text.len()));
    }
    let title = text.lines().map(str::trim).find(|l| !l.is_empty()).map(|l| l.chars().take(200).collect());
    Ok(PdfText { text, title })
}

/// One of the [`MAX_READERS`] reader slots, given back when dropped.
struct ReaderSlot;

impl ReaderSlot {
    fn take() -> Option<Self> {
        READERS.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < MAX_READERS).then_some(n + 1)).ok()?;
        Some(Self)
    }
}

impl Drop for ReaderSlot {
    fn drop(&mut self) {
        READERS.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Reader threads' panics are turned into errors; the default hook would also print them.
fn quiet_reader_panics() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if std::thread::current().name() != Some(THREAD_NAME) {
                previous(info);
            }
        }));
    });
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "the reader failed".into());
    let text: String = text.chars().take(200).collect();
    if text.is_empty() { "the reader failed".into() } else { text }
}

/// Trailing spaces dropped, form feeds as line breaks, runs of blank lines collapsed to one.
fn tidy(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut blank = 0;
    for line in text.split(['\n', '\u{c}']) {
        let line = line.trim_end();
        if line.is_empty() {
            blank += 1;
            continue;
        }
        if !out.is_empty() {
            out.push_str(if blank > 0 { "\n\n" } else { "\n" });
        }
        blank = 0;
        out.push_str(line);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tidy_collapses_blank_runs_and_page_breaks() {
        assert_eq!(
            tidy("\n\nTitle  \n\n\n\nBody one\nBody two\u{c}\n\nNext page\n"),
            "Title\n\nBody one\nBody two\n\nNext page"
        );
    }

    #[tokio::test]
    async fn files_that_are_not_pdfs_are_refused_by_name() {
        let err = read_text(b"hello".to_vec()).await.expect_err("not a pdf");
        assert!(err.contains("%PDF-"), "{err}");
    }

    /// A one-page PDF with a proper cross-reference table, its font dictionary given by `font`.
    fn one_page(font: &str) -> Vec<u8> {
        let content = "BT /F1 12 Tf 72 712 Td (Hello from a hand-made PDF) Tj ET";
        let objects = [
            "<< /Type /Catalog /Pages 2 0 R >>".to_owned(),
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_owned(),
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>".to_owned(),
            format!("<< /Length {} >>\nstream\n{content}\nendstream", content.len()),
            font.to_owned(),
        ];
        let mut pdf = b"%PDF-1.4\n".to_vec();
        let mut offsets = Vec::new();
        for (n, object) in objects.iter().enumerate() {
            offsets.push(pdf.len());
            pdf.extend_from_slice(format!("{} 0 obj\n{object}\nendobj\n", n + 1).as_bytes());
        }
        let xref = pdf.len();
        pdf.extend_from_slice(format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes());
        for offset in offsets {
            pdf.extend_from_slice(format!("{offset:010} 00000 n \n").as_bytes());
        }
        pdf.extend_from_slice(
            format!("trailer\n<< /Root 1 0 R /Size {} >>\nstartxref\n{xref}\n%%EOF\n", objects.len() + 1).as_bytes(),
        );
        pdf
    }

    #[tokio::test]
    async fn a_hand_made_pdf_is_read() {
        let read = read_text(one_page("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")).await.expect("text");
        assert_eq!(read.text, "Hello from a hand-made PDF");
        assert_eq!(read.title.as_deref(), Some("Hello from a hand-made PDF"));
    }

    #[tokio::test]
    async fn a_reader_panic_is_an_error_naming_the_problem() {
        // the reader panics on an encoding it does not know
        let pdf = one_page("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /NoSuchEncoding >>");
        let err = read_text(pdf).await.expect_err("refused");
        assert!(err.starts_with("not a readable PDF ("), "{err}");
        // and the next file is read as usual
        assert!(read_text(one_page("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")).await.is_ok());
    }

    #[tokio::test]
    async fn a_broken_pdf_is_an_error_not_a_crash() {
        for broken in [
            &b"%PDF-1.7\n"[..],
            b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 9 0 R >>\nendobj\ntrailer\n<< /Root 1 0 R >>\n%%EOF\n",
        ] {
            let err = read_text(broken.to_vec()).await.expect_err("broken");
            assert!(err.starts_with("not a readable PDF") || err.contains("no text"), "{err}");
        }
    }
}
