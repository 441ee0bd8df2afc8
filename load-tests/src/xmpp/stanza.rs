//! XMPP-over-WebSocket framing (RFC 7395) and a small scanner for the few stanzas the driver reads.
//!
//! Why a hand scanner and not an XML crate: RFC 7395 puts exactly one complete
//! top-level element in each WebSocket message, and the driver only needs that
//! element's local name, a few of its attributes and the text of one child
//! (`<jid>` after bind, `<body>` of a message). A scanner over the frame text
//! does that without a new dependency and without building a tree for tens of
//! thousands of frames a second. It handles both quote styles, namespace
//! prefixes, self-closing tags, an XML declaration and the five predefined
//! entities; it does not validate the document.

use std::borrow::Cow;

/// The framing namespace of RFC 7395.
const FRAMING_NS: &str = "urn:ietf:params:xml:ns:xmpp-framing";

/// `<open/>`: starts (and, after SASL success, restarts) the stream.
pub fn open(domain: &str) -> String {
    format!(r#"<open xmlns="{FRAMING_NS}" to="{}" version="1.0"/>"#, escape(domain))
}

/// `<close/>`: ends the stream.
pub fn close() -> String {
    format!(r#"<close xmlns="{FRAMING_NS}"/>"#)
}

/// SASL ANONYMOUS (RFC 4505) with no trace data.
pub fn auth_anonymous() -> &'static str {
    r#"<auth xmlns="urn:ietf:params:xml:ns:xmpp-sasl" mechanism="ANONYMOUS"/>"#
}

/// Resource binding (RFC 6120 §7).
pub fn bind(id: &str, resource: &str) -> String {
    format!(
        r#"<iq type="set" id="{}"><bind xmlns="urn:ietf:params:xml:ns:xmpp-bind"><resource>{}</resource></bind></iq>"#,
        escape(id),
        escape(resource)
    )
}

/// Legacy session establishment (RFC 3921), still announced by ejabberd.
pub fn session(id: &str) -> String {
    format!(r#"<iq type="set" id="{}"><session xmlns="urn:ietf:params:xml:ns:xmpp-session"/></iq>"#, escape(id))
}

/// Initial presence.
pub fn presence() -> &'static str {
    "<presence/>"
}

/// A message of `kind` (`chat` or `groupchat`) to `to`.
pub fn message(to: &str, kind: &str, id: &str, body: &str) -> String {
    format!(
        r#"<message to="{}" type="{}" id="{}"><body>{}</body></message>"#,
        escape(to),
        escape(kind),
        escape(id),
        escape(body)
    )
}

/// Joins a MUC room as `occupant` (`room@service/nick`) without room history (XEP-0045 §7.2).
pub fn join_room(occupant: &str) -> String {
    format!(
        r#"<presence to="{}"><x xmlns="http://jabber.org/protocol/muc"><history maxstanzas="0"/></x></presence>"#,
        escape(occupant)
    )
}

/// Accepts the default configuration of a newly created room ("instant room", XEP-0045 §10.1.2).
pub fn instant_room(room: &str, id: &str) -> String {
    format!(
        r#"<iq type="set" to="{}" id="{}"><query xmlns="http://jabber.org/protocol/muc#owner"><x xmlns="jabber:x:data" type="submit"/></query></iq>"#,
        escape(room),
        escape(id)
    )
}

/// Escapes text for an attribute value or character data.
pub fn escape(text: &str) -> Cow<'_, str> {
    if !text.contains(['<', '>', '&', '"', '\'']) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Resolves the five predefined entities; anything else is kept as it is.
pub fn unescape(text: &str) -> Cow<'_, str> {
    if !text.contains('&') {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let entity = [("&lt;", '<'), ("&gt;", '>'), ("&amp;", '&'), ("&quot;", '"'), ("&apos;", '\'')]
            .into_iter()
            .find(|(name, _)| rest.starts_with(name));
        match entity {
            Some((name, c)) => {
                out.push(c);
                rest = &rest[name.len()..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    Cow::Owned(out)
}

/// The start tag of an element: its local name and raw attributes.
#[derive(Debug, PartialEq)]
pub struct Tag<'a> {
    /// The name without a namespace prefix (`features` for `stream:features`).
    pub name: &'a str,
    attrs: &'a str,
    /// Whether the tag is self-closing (`<x/>`).
    pub empty: bool,
    /// The byte offset just past the tag's `>`.
    end: usize,
}

impl<'a> Tag<'a> {
    /// The value of attribute `key` (matched with its prefix, e.g. `xml:lang`), unescaped.
    pub fn attr(&self, key: &str) -> Option<Cow<'a, str>> {
        let mut rest = self.attrs;
        loop {
            rest = rest.trim_start();
            let eq = rest.find('=')?;
            let name = rest[..eq].trim();
            let after = rest[eq + 1..].trim_start();
            let quote = after.chars().next().filter(|c| *c == '"' || *c == '\'')?;
            let value_len = after[1..].find(quote)?;
            if name == key {
                return Some(unescape(&after[1..1 + value_len]));
            }
            rest = &after[value_len + 2..];
        }
    }
}

/// The first start tag at or after byte `from` of `text`, skipping declarations and comments.
fn next_tag(text: &str, from: usize) -> Option<Tag<'_>> {
    let mut at = from;
    loop {
        at += text.get(at..)?.find('<')?;
        let rest = &text[at + 1..];
        if rest.starts_with('?') || rest.starts_with('!') || rest.starts_with('/') {
            at += 1;
            continue;
        }
        let name_len = rest.find(|c: char| c.is_whitespace() || c == '/' || c == '>')?;
        let qualified = &rest[..name_len];
        let close = tag_close(&rest[name_len..])?;
        let inner = &rest[name_len..name_len + close];
        let empty = inner.ends_with('/');
        let attrs = if empty { &inner[..inner.len() - 1] } else { inner };
        let name = qualified.rsplit_once(':').map_or(qualified, |(_, local)| local);
        return Some(Tag { name, attrs, empty, end: at + 1 + name_len + close + 1 });
    }
}

/// The offset of the `>` that ends a tag, ignoring any inside quoted attribute values.
fn tag_close(text: &str) -> Option<usize> {
    let mut quote = None;
    for (i, c) in text.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), c) if c == q => quote = None,
            (None, '>') => return Some(i),
            _ => {}
        }
    }
    None
}

/// The top-level element of a frame.
pub fn root(frame: &str) -> Option<Tag<'_>> {
    next_tag(frame, 0)
}

/// The text of the first descendant element named `name` (local name), unescaped; `""` if it is empty.
pub fn child_text<'a>(frame: &'a str, name: &str) -> Option<Cow<'a, str>> {
    let root = root(frame)?;
    let mut at = root.end;
    loop {
        let tag = next_tag(frame, at)?;
        if tag.name == name {
            if tag.empty {
                return Some(Cow::Borrowed(""));
            }
            let len = frame[tag.end..].find('<')?;
            return Some(unescape(&frame[tag.end..tag.end + len]));
        }
        at = tag.end;
    }
}

/// Whether the frame has a descendant `name` element with attribute `key` = `value`.
pub fn has_child_with(frame: &str, name: &str, key: &str, value: &str) -> bool {
    let Some(root) = root(frame) else { return false };
    let mut at = root.end;
    while let Some(tag) = next_tag(frame, at) {
        if tag.name == name && tag.attr(key).is_some_and(|v| v == value) {
            return true;
        }
        at = tag.end;
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_the_framing_and_login_stanzas() {
        assert_eq!(
            open("localhost"),
            r#"<open xmlns="urn:ietf:params:xml:ns:xmpp-framing" to="localhost" version="1.0"/>"#
        );
        assert_eq!(close(), r#"<close xmlns="urn:ietf:params:xml:ns:xmpp-framing"/>"#);
        assert!(bind("b1", "r&d").contains("<resource>r&amp;d</resource>"));
        assert_eq!(
            message("a@localhost/x", "chat", "0-7", "pl 0 7"),
            r#"<message to="a@localhost/x" type="chat" id="0-7"><body>pl 0 7</body></message>"#
        );
        assert!(
            join_room("room@conference.localhost/o1").starts_with(r#"<presence to="room@conference.localhost/o1">"#)
        );
    }

    #[test]
    fn escapes_and_unescapes_round_trip() {
        let text = r#"a<b>&"c'"#;
        assert_eq!(escape(text), "a&lt;b&gt;&amp;&quot;c&apos;");
        assert_eq!(unescape(&escape(text)), text);
        assert!(matches!(escape("plain"), Cow::Borrowed(_)));
        assert_eq!(unescape("x &unknown; &amp;"), "x &unknown; &");
    }

    #[test]
    fn reads_the_root_of_a_server_open_and_features() {
        let open = r#"<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' id='123' version='1.0' xml:lang='en' from='localhost'/>"#;
        let tag = root(open).expect("a root");
        assert_eq!((tag.name, tag.empty), ("open", true));
        assert_eq!(tag.attr("from").as_deref(), Some("localhost"));
        assert_eq!(tag.attr("xml:lang").as_deref(), Some("en"));
        assert_eq!(tag.attr("lang"), None);

        let features = r#"<?xml version='1.0'?><stream:features xmlns:stream='http://etherx.jabber.org/streams'><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism><mechanism>ANONYMOUS</mechanism></mechanisms></stream:features>"#;
        assert_eq!(root(features).map(|t| t.name), Some("features"));
        assert_eq!(child_text(features, "mechanism").as_deref(), Some("PLAIN"));
    }

    #[test]
    fn reads_the_bound_jid_and_a_message_body() {
        let bound = r#"<iq xmlns='jabber:client' type='result' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><jid>1234@localhost/r0</jid></bind></iq>"#;
        let tag = root(bound).expect("a root");
        assert_eq!((tag.name, tag.attr("type").as_deref()), ("iq", Some("result")));
        assert_eq!(child_text(bound, "jid").as_deref(), Some("1234@localhost/r0"));

        let message = r#"<message xml:lang='en' to='b@localhost/r1' from='a@localhost/r0' type="chat" id='0-7' xmlns='jabber:client'><archived by='b@localhost' xmlns='urn:xmpp:mam:tmp' id='1'/><stanza-id by='b@localhost' xmlns='urn:xmpp:sid:0' id='1'/><body>pl 0 7 a&gt;b</body></message>"#;
        let tag = root(message).expect("a root");
        assert_eq!(tag.name, "message");
        assert_eq!(tag.attr("type").as_deref(), Some("chat"));
        assert_eq!(child_text(message, "body").as_deref(), Some("pl 0 7 a>b"));
        assert_eq!(child_text(message, "subject"), None);
    }

    #[test]
    fn quoted_gt_does_not_end_a_tag_and_empty_children_are_empty() {
        let frame = r#"<message id='a>b'><subject/><body></body></message>"#;
        assert_eq!(root(frame).and_then(|t| t.attr("id")).as_deref(), Some("a>b"));
        assert_eq!(child_text(frame, "subject").as_deref(), Some(""));
        assert_eq!(child_text(frame, "body").as_deref(), Some(""));
    }

    #[test]
    fn finds_the_self_presence_status_of_a_room_join() {
        let presence = r#"<presence from='room@conference.localhost/o0' to='x@localhost/r'><x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='owner' role='moderator'/><status code='201'/><status code='110'/></x></presence>"#;
        assert!(has_child_with(presence, "status", "code", "110"));
        assert!(has_child_with(presence, "status", "code", "201"));
        assert!(!has_child_with(presence, "status", "code", "100"));
        assert!(!has_child_with("<presence/>", "status", "code", "110"));
    }

    #[test]
    fn malformed_input_gives_none_not_a_panic() {
        for frame in ["", "no tag", "<", "<open", "<a x='1>", "<a x=1>", "</a>", "<!-- c -->"] {
            let _ = root(frame).map(|t| t.attr("x"));
            let _ = child_text(frame, "a");
        }
        assert_eq!(root("<a x=1>").and_then(|t| t.attr("x")), None);
    }
}
