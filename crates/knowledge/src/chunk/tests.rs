use super::*;

fn texts<'a>(text: &'a str, chunks: &[Chunk]) -> Vec<&'a str> {
    chunks.iter().map(|c| &text[c.start..c.end]).collect()
}

#[test]
fn markdown_sections_stay_apart_and_keep_their_heading_path() {
    let text = "# Guide\n\nIntro para.\n\n## Install\n\nRun the script.\n\n```sh\nscripts/up\n\nmore\n```\n\n## Use\n\nCall it.\n";
    let (chunks, headings) = chunk(text, DocumentKind::Markdown, ChunkOptions::default());
    assert_eq!(
        headings.iter().map(|h| (h.level, h.text.as_str())).collect::<Vec<_>>(),
        vec![(1, "Guide"), (2, "Install"), (2, "Use")]
    );
    assert_eq!(
        texts(text, &chunks),
        vec![
            "# Guide\n\nIntro para.",
            "## Install\n\nRun the script.\n\n```sh\nscripts/up\n\nmore\n```",
            "## Use\n\nCall it."
        ]
    );
    assert_eq!(chunks[1].heading.as_deref(), Some("Guide > Install"));
    assert_eq!(chunks[2].heading.as_deref(), Some("Guide > Use"));
}

#[test]
fn long_sections_split_with_overlap_and_exact_offsets() {
    let paragraph = "word ".repeat(60);
    let text = format!("# Big\n\n{}\n\n{}\n\n{}\n", paragraph.trim(), paragraph.trim(), paragraph.trim());
    let options = ChunkOptions { max_chars: 400, overlap_chars: 50 };
    let (chunks, _) = chunk(&text, DocumentKind::Markdown, options);
    assert!(chunks.len() >= 2, "{chunks:?}");
    for pair in chunks.windows(2) {
        assert!(pair[1].start < pair[0].end, "consecutive chunks of a section overlap: {pair:?}");
    }
    for c in &chunks {
        assert!(text[c.start..c.end].chars().count() <= 400);
        assert!(text.is_char_boundary(c.start) && text.is_char_boundary(c.end));
        assert!(!text[c.start..c.end].starts_with(' '));
    }
}

#[test]
fn an_overlap_never_grows_a_chunk_past_max_chars() {
    // found by the `ingest` fuzz target: the blank lines between two paragraphs were not counted, so
    // a chunk that repeated the end of the previous one came out 2 characters over the limit
    let text = "# Circuit breakers\n\nA circuit breaker opens when the failure rate in its rolling window reaches \
                the threshold (0.5 by\ndefault) after at least `min_requests` calls (5 by default).\n";
    let options = ChunkOptions { max_chars: 100, overlap_chars: 25 };
    for kind in [DocumentKind::Text, DocumentKind::Markdown] {
        let (chunks, _) = chunk(text, kind, options);
        assert!(chunks.len() > 1, "{kind:?}: {chunks:?}");
        for piece in texts(text, &chunks) {
            let count = piece.chars().count();
            assert!(count <= 100, "{kind:?}: a chunk of {count} characters: {piece:?}");
        }
    }
}

#[test]
fn a_blank_line_between_split_pieces_does_not_push_the_next_one_past_max_chars() {
    // found by the `ingest` fuzz target: in an oversized block cut at lines, the blank line after a
    // piece of exactly `max_chars` opened the next piece, which came out one character over
    let text = format!("```\n{}\n\n{}\n```\n", "a".repeat(96), "b".repeat(100));
    let (chunks, _) = chunk(&text, DocumentKind::Markdown, ChunkOptions { max_chars: 100, overlap_chars: 0 });
    let pieces = texts(&text, &chunks);
    for piece in &pieces {
        assert!(piece.chars().count() <= 100, "{piece:?}");
    }
    assert!(pieces.contains(&"b".repeat(100).as_str()), "{pieces:?}");
}

#[test]
fn a_huge_line_of_multibyte_text_is_cut_on_character_boundaries() {
    let text = "한글".repeat(3000);
    let (chunks, _) = chunk(&text, DocumentKind::Text, ChunkOptions { max_chars: 500, overlap_chars: 0 });
    assert_eq!(chunks.len(), 12);
    assert_eq!(chunks.iter().map(|c| text[c.start..c.end].chars().count()).sum::<usize>(), 6000);
}

#[test]
fn code_blocks_are_named_by_what_they_define() {
    let text =
        "use std::io;\n\n/// Docs.\npub fn claim(x: u32) -> u32 {\n    x\n}\n\nstruct Lease {\n    id: u64,\n}\n";
    let (chunks, _) = chunk(text, DocumentKind::Code, ChunkOptions { max_chars: 40, overlap_chars: 0 });
    let headings: Vec<_> = chunks.iter().map(|c| c.heading.as_deref()).collect();
    assert_eq!(headings, vec![None, Some("claim"), Some("Lease")]);
}

#[test]
fn empty_and_blank_documents_have_no_chunks() {
    for kind in [DocumentKind::Markdown, DocumentKind::Text, DocumentKind::Code] {
        assert!(chunk("", kind, ChunkOptions::default()).0.is_empty());
        assert!(chunk("\n\n   \n", kind, ChunkOptions::default()).0.is_empty());
    }
}

#[test]
fn an_unclosed_fence_runs_to_the_end() {
    let text = "# A\n\n```\ncode\nmore";
    let (chunks, _) = chunk(text, DocumentKind::Markdown, ChunkOptions::default());
    assert!(texts(text, &chunks).concat().contains("more"));
}

#[test]
fn html_becomes_its_visible_text() {
    let html = "<html><head><title>The &amp; Title</title><style>p{}</style><script>var x = '<p>';</script></head>\
                <body><h1>Main</h1><p>Hello&nbsp;<b>world</b> &lt;3</p><!-- hidden --><h2>Next</h2><ul><li>one</li><li>two</li></ul></body></html>";
    let (text, title) = html_to_text(html);
    assert_eq!(title.as_deref(), Some("The & Title"));
    assert!(text.contains("# Main\n"), "{text}");
    assert!(text.contains("Hello world <3"), "{text}");
    assert!(text.contains("## Next"), "{text}");
    assert!(!text.contains("var x") && !text.contains("hidden") && !text.contains("p{}"), "{text}");
}

#[test]
fn html_cut_inside_a_character_does_not_panic() {
    // found by the `ingest` fuzz target: an unclosed tag and an entity's 12-byte look-ahead were cut
    // by bytes, inside a multi-byte character
    assert_eq!(html_to_text("<\u{e9}").0, "");
    let (text, title) = html_to_text("<title>&00;&#xD40;\u{4d5}svg");
    assert_eq!(title, None);
    assert!(text.contains("&00;"), "{text:?}");
    let (text, _) = html_to_text("<p>a &aaaaaaaaaa\u{e9}; b</p>");
    assert!(text.contains("a &aaaaaaaaaa\u{e9}; b"), "{text:?}");
}

#[test]
fn kinds_follow_extensions() {
    assert_eq!(DocumentKind::of_path("a/b/README.md"), Some(DocumentKind::Markdown));
    assert_eq!(DocumentKind::of_path("x.RS"), Some(DocumentKind::Code));
    assert_eq!(DocumentKind::of_path("logo.png"), None);
    assert_eq!(DocumentKind::of_path("Makefile"), None);
}
