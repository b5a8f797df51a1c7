# ruff: noqa: E501
"""Tricky messages for the IMAP content tests (ENVELOPE, BODYSTRUCTURE, sections, SEARCH).

Written with "\\n" and turned into CRLF unless the name ends in ``_lf`` (bare LF stored).
"""

from __future__ import annotations


def _crlf(text: str) -> bytes:
    return text.replace("\n", "\r\n").encode()


_SIMPLE = """\
Date: Mon, 23 Nov 2026 09:00:00 +0100
From: Alice Martin <alice@a.example>
To: bob@b.example
Subject: Compte rendu
Message-ID: <1@a.example>

Bonjour,
suite au rendez-vous.
"""

_NESTED = """\
Date: Tue, 24 Nov 2026 10:11:12 +0000
From: "Dr. Martin, Alice" <alice@a.example>
To: Bob <bob@b.example>, carol@c.example (Carol C.)
Cc: <dave@d.example>
Subject: Resultats
Message-ID: <2@a.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="outer"

This is a MIME preamble.
--outer
Content-Type: multipart/alternative; boundary=inner

--inner
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: quoted-printable

R=C3=A9sultats normaux.
--inner
Content-Type: text/html; charset=utf-8

<p>R&eacute;sultats normaux.</p>
--inner--
--outer
Content-Type: application/pdf; name="resultats.pdf"
Content-Disposition: attachment; filename*=utf-8''r%C3%A9sultats.pdf
Content-Transfer-Encoding: base64

JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K
eJwrVAhUKOQCAAeDAcsKZW5kc3RyZWFtCmVuZG9iago=
--outer--
epilogue text
"""

_RFC822 = """\
Date: Wed, 25 Nov 2026 08:00:00 +0100
From: carol@c.example
To: alice@a.example
Subject: Fwd: Resultats
Message-ID: <3@c.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain

See the forwarded message.
--b1
Content-Type: message/rfc822
Content-Description: forwarded message

Date: Tue, 24 Nov 2026 10:11:12 +0000
From: Bob <bob@b.example>
To: carol@c.example
Subject: Original
Message-ID: <orig@b.example>
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary="b2"

--b2
Content-Type: text/plain

Original text.
--b2
Content-Type: text/html

<b>Original</b>
--b2--

--b1--
"""

_ENCODED = """\
Date: Thu, 26 Nov 2026 12:00:00 +0100
From: =?UTF-8?Q?Ren=C3=A9_Dupr=C3=A9?= <rene@a.example>
To: =?iso-8859-1?q?Fran=E7oise?= <francoise@b.example>,
 "=?UTF-8?B?w4lsb2RpZQ==?=" <elodie@b.example>
Subject: =?UTF-8?B?UsOpc3VsdGF0cyBkJ2FuYWx5c2U=?=
 =?UTF-8?Q?_urgents?=
Message-ID: <4@a.example>
In-Reply-To: <3@c.example> <2@a.example>

Texte.
"""

_RAW_UTF8 = """\
Date: Fri, 27 Nov 2026 12:00:00 +0100
From: Zoé Lefèvre <zoe@a.example>
To: "Jérôme \\"Jé\\" Noël" <jerome@b.example>
Subject: Réunion du comité "santé"
Message-ID: <5@a.example>
Content-Type: text/plain; charset=utf-8
Content-Transfer-Encoding: 8bit

Ordre du jour : coordination des soins à domicile.
"""

_GROUPS = """\
Date: Sat, 28 Nov 2026 12:00:00 +0100
From: alice@a.example
To: Equipe soins: bob@b.example, Carol <carol@c.example>;, eve@e.example
Cc: undisclosed-recipients:;
Bcc: secret@s.example
Subject: groups
Message-ID: <6@a.example>

body
"""

_NO_DATE = """\
From: nobody
To: <@route.example:bob@b.example>
Sender: sec@a.example
Reply-To: replies@a.example
Subject: no date, no id

x"""

_BARE_LF_lf = """\
From: alice@a.example
Subject: bare LF
Content-Type: multipart/mixed; boundary=zz

--zz
Content-Type: text/plain

one
two
--zz
Content-Type: text/plain; charset=ISO-8859-1
Content-Transfer-Encoding: base64

Q2hhcmxvdHRlIGV0IHBoaWxpcHBlCg==
--zz--
"""

_NO_END = """\
From: alice@a.example
Subject: no closing boundary
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="nope"

--nope
Content-Type: text/plain

first
--nope
Content-Type: text/plain

second, never closed
"""

_DIGEST = """\
From: list@l.example
Subject: digest
MIME-Version: 1.0
Content-Type: multipart/digest; boundary="d"

--d

From: a@a.example
Subject: one

one
--d

From: b@b.example
Subject: two

two
--d--
"""

_PARAMS = """\
From: alice@a.example
Subject: params
MIME-Version: 1.0
Content-Type: TEXT/HTML; CHARSET="UTF-8"; Format=Flowed
Content-ID: <part1@a.example>
Content-Description: the report
Content-Transfer-Encoding: QUOTED-PRINTABLE
Content-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==
Content-Disposition: inline; filename="r.html"; size=120
Content-Language: fr, en-GB
Content-Location: http://a.example/r.html

<p>r=C3=A9sum=C3=A9</p>
"""

_NO_BOUNDARY = """\
From: alice@a.example
Subject: multipart without boundary
MIME-Version: 1.0
Content-Type: multipart/mixed

--x
Content-Type: text/plain

hello
--x--
"""

_RFC2231 = """\
From: alice@a.example
Subject: continuations
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="=_b"

--=_b
Content-Type: application/octet-stream;
 name*0*=utf-8''compte%20rendu%20;
 name*1*=d%C3%A9taill%C3%A9.bin
Content-Disposition: attachment;
 filename*0="compte rendu ";
 filename*1="detaille.bin"
Content-Transfer-Encoding: base64

AAECAwQ=
--=_b--
"""

_HEADERS_ONLY = """\
From: alice@a.example
Subject: headers only
"""

_EMPTY_MULTIPART = """\
From: alice@a.example
Subject: empty multipart
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="e"

no parts at all
"""

_FOLDED = """\
Date: Sun, 29 Nov 2026 12:00:00 +0100
From: alice@a.example (Alice in a comment)
To: bob@b.example
Subject: a folded
\tsubject with "quotes" and \\backslash
Message-ID:
 <7@a.example>
X-Priority: 1

Body with a long line and the word needle.
"""

_FOLDED2 = """\
Date: Mon, 30 Nov 2026
 12:00:00 +0100
From: "Alice
 Martin" <alice@a.example>
To: bob@b.example,
\tcarol@c.example
Subject: first subject
Subject: second subject
In-Reply-To: <a@a.example>
 <b@b.example>
Message-ID: <8@a.example>
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="abc"

--abc
Content-Type: multipart/alternative; boundary="abcd"
Content-Description: folded
 description

--abcd
Content-Type: text
Content-Transfer-Encoding: 7BIT

no subtype
--abcd
Content-Type: application/x-thing; charset=utf-8

thing
--abcd--
--abc
Content-Type: message/rfc822

From: inner@i.example
Subject: inner

--abc
Content-Type: text/plain; charset=""

after an unterminated inner message
--abc--
"""

_SAME_BOUNDARY = """\
From: alice@a.example
Subject: same boundary twice
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="x"

--x
Content-Type: multipart/alternative; boundary="x"

--x
Content-Type: text/plain

a
--x--
--x
Content-Type: text/plain

b
--x--
"""

_ADDRESSES = """\
From: Dr. Martin <a@b.c>
To: Alice   Martin <c@d.e>, Bob.  Smith\t<x@y.z>
Cc: "A  B" <e@f.g>, h@i.j (x) (y), k@l.m (  sp  ), (pre) n@o.p
Bcc: a@b (x), "" <q@r.s>, <>, <t@>, @u.v, w, "x y"@z.a
Reply-To: =?utf-8?q?a?= =?utf-8?q?b?= <c@d.e>, a b.c <d@e.f>
Sender: x:;, y : a@b.c ;, z: ;

x"""

CORPUS: dict[str, bytes] = {
    "simple": _crlf(_SIMPLE),
    "nested": _crlf(_NESTED),
    "rfc822": _crlf(_RFC822),
    "encoded": _crlf(_ENCODED),
    "raw_utf8": _crlf(_RAW_UTF8),
    "groups": _crlf(_GROUPS),
    "no_date": _crlf(_NO_DATE),
    "bare_lf": _BARE_LF_lf.encode(),
    "no_end": _crlf(_NO_END),
    "digest": _crlf(_DIGEST),
    "params": _crlf(_PARAMS),
    "no_boundary": _crlf(_NO_BOUNDARY),
    "rfc2231": _crlf(_RFC2231),
    "headers_only": _crlf(_HEADERS_ONLY),
    "empty_multipart": _crlf(_EMPTY_MULTIPART),
    "folded": _crlf(_FOLDED),
    "folded2": _crlf(_FOLDED2),
    "same_boundary": _crlf(_SAME_BOUNDARY),
    "addresses": _crlf(_ADDRESSES),
}

# SEARCH programs run on the whole corpus (UID SEARCH CHARSET UTF-8 ...): upper-case ASCII
# words are keys, anything else a string argument (sent as a literal).
SEARCHES: list[list[str]] = [
    ["SUBJECT", "résultats"], ["SUBJECT", "RESULTATS"], ["SUBJECT", "urgents"],
    ["SUBJECT", "santé"], ["FROM", "rené"], ["FROM", "dupré"], ["FROM", "alice"],
    ["FROM", "Martin, Alice"], ["TO", "élodie"], ["TO", "françoise"], ["CC", "dave"],
    ["BCC", "secret"], ["TO", "equipe"], ["FROM", "comment"], ["BODY", "résultats normaux"],
    ["BODY", "original text"], ["BODY", "needle"], ["BODY", "charlotte"], ["BODY", "JVBERi"],
    ["BODY", "second, never"], ["BODY", "r&eacute;"], ["BODY", "R=C3=A9sultats"],
    ["BODY", "preamble"], ["BODY", "multipart/alternative"], ["TEXT", "needle"],
    ["TEXT", "x-priority"], ["TEXT", "inner"], ["TEXT", "quoted-printable"],
    ["TEXT", "Subject: Original"], ["TEXT", "resultats.pdf"], ["HEADER", "X-Priority", "1"],
    ["HEADER", "Message-ID", ""], ["HEADER", "content-type", "digest"],
    ["HEADER", "cc", "undisclosed"], ["SENTBEFORE", "25-Nov-2026"], ["SENTON", "24-Nov-2026"],
    ["SENTSINCE", "27-Nov-2026"], ["SENTON", "1-Jan-1970"], ["SUBJECT", "folded subject"],
    ["SUBJECT", "folded\tsubject"], ["SUBJECT", "second"], ["SUBJECT", ""], ["BODY", ""],
    ["SUBJECT", "d'analyse"], ["FROM", "zoé"], ["TO", "jé"], ["TEXT", "bonjour"],
    ["OR", "FROM", "bob", "NOT", "BODY", "text"], ["NOT", "TEXT", "a.example"],
]

# Sections fetched for every message (RFC 3501 §6.4.5), as BODY.PEEK[...]
SECTIONS = [
    "", "HEADER", "TEXT", "HEADER.FIELDS (FROM TO)", "HEADER.FIELDS.NOT (SUBJECT FROM)",
    "HEADER.FIELDS (X-NONE)", "1", "1.MIME", "2", "2.MIME", "3", "1.1", "1.2", "1.1.MIME",
    "2.HEADER", "2.TEXT", "2.1", "2.2", "2.1.MIME", "2.HEADER.FIELDS (SUBJECT)", "1.HEADER",
    "1.1.1", "2.1.1",
]

# Found by differential fuzzing against Dovecot (tests/dovecot_fuzz.py), malformed on
# purpose.
CORPUS.update({
    'fuzz_repeated_fields': b'Content-Type: multipart/digest; boundary=b\r\n--b\r\nContent-Disposition: attachment; filename="a b.txt"\r\nContent-Transfer-Encoding: base64\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n--b--\r\nContent-Type: text/plain; name*0=a; name*1=b\r\nSubject: =?utf-8?q?x?= y\r\nMessage-ID: <m@x>\r\nReply-To: <>\r\nSubject: caf\xc3\xa9\r\nSubject: =?utf-8?q?x?= y\r\nContent-Type: text/plain; charset=latin1\r\nSubject: =?utf-8?q?x?= y\r\nSubject: =?utf-8?q?x?= y\r\nCc: ,,a@b,,\r\n folded\r\n--b--\r\nContent-Language: fr\r\nSubject: caf\xc3\xa9\r\nContent-Type: ;\r\n',
    'fuzz_language_fold': b'Content-Type: multipart/digest; boundary=b\r\nContent-Type: multipart/digest; boundary=b\r\nCc: ,,a@b,,\r\nContent-Type: application/octet-stream\r\nContent-Type: text/plain; name*0=a; name*1=b\r\nContent-Language: fr\r\n\tfolded tab\r\nContent-Type: multipart/alternative; boundary="b"\r\nMessage-ID: <m@x>\r\nContent-Type: MESSAGE/RFC822\r\nContent-Type: text/plain; name*0=a; name*1=b\r\nContent-Type: multipart/digest; boundary=b\r\nContent-Type: text/html\r\nContent-Type: text/plain; name*0=a; name*1=b\r\n--b\r\nContent-Disposition: attachment; filename="a b.txt"\r\nFrom: Dr. X <x@y> (com)\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nContent-ID: <x@y>\r\n=C3=A9\r\nContent-Type: MESSAGE/RFC822\r\nFrom: Dr. X <x@y> (com)\r\n--b  \r\nReply-To: <>',
    'fuzz_name_only': b'Subject: s\r\nFrom: "q\\"x" <a@b>\r\nSender: x\r\n folded\r\nContent-Language: fr\r\nTo: g: h@i;\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\n=C3=A9\r\nReply-To: <>\r\nContent-Transfer-Encoding: base64',
    'fuzz_cut_rfc822': b'Content-Type: multipart/digest; boundary=b\r\nFrom: a@b, (c) <d@e>\r\n\r\nFrom: "q\\"x" <a@b>\r\nFrom: "q\\"x" <a@b>\r\n=C3=A9\r\nReply-To: <>\r\nTo: g: h@i;\r\nCc: ,,a@b,,\r\nContent-Transfer-Encoding: base64\r\n=C3=A9\r\nSubject: caf\xc3\xa9\r\n--b\r\nContent-Type: MESSAGE/RFC822\r\n--b\r\nContent-Type: application/octet-stream\r\nFrom: Dr. X <x@y> (com)',
    'fuzz_cut_digest': b'Content-Type: multipart/mixed; boundary=b\r\n\r\nSender: x\r\nContent-Transfer-Encoding: base64\r\ntext line\r\nMessage-ID: <m@x>\r\nContent-Type: MESSAGE/RFC822\r\n\tfolded tab\r\ntext line\r\n--b\r\nContent-Type: multipart/digest; boundary=b\r\nContent-Description: d\xc3\xa9\r\nContent-Type: ;\r\n--b\r\nContent-Transfer-Encoding: base64',
    'fuzz_eof_boundary': b'Content-Type: multipart/mixed; boundary=b\r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nContent-Disposition: attachment; filename="a b.txt"\r\nContent-Type: message/rfc822\r\n--b--\r\nTo: g: h@i;\r\n\r\n\r\n\r\nContent-Type: multipart/mixed; boundary=c\r\n folded\r\n\r\nContent-Disposition: attachment; filename="a b.txt"\r\nContent-Type: text/plain; charset=latin1\r\nContent-Type: application/octet-stream\r\n--b  \r\nContent-Type: multipart/digest; boundary=b\r\n--b\r\nContent-Type: text/html\r\nContent-Type: multipart/mixed; boundary=c\r\nBcc: "A, B" <a@b> (c)\r\nFrom: a@b, (c) <d@e>\r\n--b  \r\nContent-Type: text/plain; charset=latin1\r\nContent-Description: d\xc3\xa9',
    'fuzz_empty_body_mime': b'Content-Type: multipart/digest; boundary=b\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename="a b.txt"\r\nX-Foo: bar\r\n\r\n folded\r\nReply-To: <>\r\n--c\r\nFrom: "q\\"x" <a@b>\r\n--b\r\nCc: ,,a@b,,\r\nContent-Type: multipart/mixed; boundary=c\r\n\r\n--bx\r\nFrom: a@b, (c) <d@e>\r\ntext line\r\nContent-Type: text/html\r\nFrom: a@b, (c) <d@e>\r\nContent-Type: MESSAGE/RFC822\r\nReply-To: <>\r\n--b\r\n--b\r\nFrom: Dr. X <x@y> (com)\r\ntext line\r\n',
    'fuzz_cut_header': b'Content-Type: multipart/mixed; boundary=b\r\nContent-Type: text/html\r\nSubject: caf\xc3\xa9\r\nMessage-ID: <m@x>\r\nTo: g: h@i;\r\n\tfolded tab\r\n\tfolded tab\r\nContent-Type: ;\r\n--b  \r\n\r\n--c\r\nContent-Type: message/rfc822\r\n--b  \r\nDate: Mon, 1 Jan 2024 00:00:00 +0000\r\nContent-Type: multipart/digest; boundary=b\r\n--b--\r\nFrom: "q\\"x" <a@b>\r\nMessage-ID: <m@x>\r\nContent-Type: text',
})
