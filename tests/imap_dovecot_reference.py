"""Dovecot 2.3.19 answers for tests/imap_corpus.py, recorded with tests/dovecot_reference.py
(APPEND to a scratch folder of a local Dovecot, then FETCH ENVELOPE, BODY, BODYSTRUCTURE and
BODY.PEEK[section] of SECTIONS; a section value of b"" is Dovecot's empty literal; and the
messages found by each SEARCHES program in SEARCH_REFERENCE). Regenerate:
python -m tests.dovecot_reference 127.0.0.1 PORT USER PASSWORD >> this file (after this header).
"""

# ruff: noqa: E501

REFERENCE = {'addresses': {'BODY': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0)',
               'BODYSTRUCTURE': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NI'
                                b'L NIL NIL)',
               'BODY[1.1.1]': b'',
               'BODY[1.1.MIME]': b'',
               'BODY[1.1]': b'',
               'BODY[1.2]': b'',
               'BODY[1.HEADER]': b'',
               'BODY[1.MIME]': b'From: Dr. Martin <a@b.c>\r\nTo: Alice   Martin <c@d.e>, Bob.  Smit'
                               b'h\t<x@y.z>\r\nCc: "A  B" <e@f.g>, h@i.j (x) (y), k@l.m (  sp  )'
                               b', (pre) n@o.p\r\nBcc: a@b (x), "" <q@r.s>, <>, <t@>, @u.v, w, "x y'
                               b'"@z.a\r\nReply-To: =?utf-8?q?a?= =?utf-8?q?b?= <c@d.e>, a b.c <d@e'
                               b'.f>\r\nSender: x:;, y : a@b.c ;, z: ;\r\n\r\n',
               'BODY[1]': b'x',
               'BODY[2.1.1]': b'',
               'BODY[2.1.MIME]': b'',
               'BODY[2.1]': b'',
               'BODY[2.2]': b'',
               'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
               'BODY[2.HEADER]': b'',
               'BODY[2.MIME]': b'',
               'BODY[2.TEXT]': b'',
               'BODY[2]': b'',
               'BODY[3]': b'',
               'BODY[HEADER.FIELDS (FROM TO)]': b'From: Dr. Martin <a@b.c>\r\nTo: Alice   Martin'
                                                b' <c@d.e>, Bob.  Smith\t<x@y.z>\r\n\r\n',
               'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
               'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'To: Alice   Martin <c@d.e>, Bob.  Sm'
                                                         b'ith\t<x@y.z>\r\nCc: "A  B" <e@f.g>, h@i'
                                                         b'.j (x) (y), k@l.m (  sp  ), (pre) n@'
                                                         b'o.p\r\nBcc: a@b (x), "" <q@r.s>, <>, <'
                                                         b't@>, @u.v, w, "x y"@z.a\r\nReply-To: ='
                                                         b'?utf-8?q?a?= =?utf-8?q?b?= <c@d.e>, a b.'
                                                         b'c <d@e.f>\r\nSender: x:;, y : a@b.c ;,'
                                                         b' z: ;\r\n\r\n',
               'BODY[HEADER]': b'From: Dr. Martin <a@b.c>\r\nTo: Alice   Martin <c@d.e>, Bob.  Smit'
                               b'h\t<x@y.z>\r\nCc: "A  B" <e@f.g>, h@i.j (x) (y), k@l.m (  sp  )'
                               b', (pre) n@o.p\r\nBcc: a@b (x), "" <q@r.s>, <>, <t@>, @u.v, w, "x y'
                               b'"@z.a\r\nReply-To: =?utf-8?q?a?= =?utf-8?q?b?= <c@d.e>, a b.c <d@e'
                               b'.f>\r\nSender: x:;, y : a@b.c ;, z: ;\r\n\r\n',
               'BODY[TEXT]': b'x',
               'BODY[]': b'From: Dr. Martin <a@b.c>\r\nTo: Alice   Martin <c@d.e>, Bob.  Smith\t<x'
                         b'@y.z>\r\nCc: "A  B" <e@f.g>, h@i.j (x) (y), k@l.m (  sp  ), (pre) n@o.'
                         b'p\r\nBcc: a@b (x), "" <q@r.s>, <>, <t@>, @u.v, w, "x y"@z.a\r\nReply-To:'
                         b' =?utf-8?q?a?= =?utf-8?q?b?= <c@d.e>, a b.c <d@e.f>\r\nSender: x:;, y '
                         b': a@b.c ;, z: ;\r\n\r\nx',
               'ENVELOPE': b'(NIL NIL (("Dr. Martin" NIL "a" "b.c")) ((NIL NIL "x" NIL)(NIL NIL N'
                           b'IL NIL)(NIL NIL "y" NIL)(NIL NIL "a" "b.c")(NIL NIL NIL NIL)(NIL NIL'
                           b' "z" NIL)(NIL NIL NIL NIL)) (("=?utf-8?q?a?= =?utf-8?q?b?=" NIL "c" '
                           b'"d.e")("a b.c" NIL "d" "e.f")) (("Alice Martin" NIL "c" "d.e")("Bob.'
                           b' Smith" NIL "x" "y.z")) (({3}\r\nA B NIL "e" "f.g")("y" NIL "h" "i.j")'
                           b'({2}\r\nsp NIL "k" "l.m")(NIL NIL "n" "o.p")) (("x" NIL "a" "b")(NIL N'
                           b'IL "q" "r.s")(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "t'
                           b'" "SYNTAX_ERROR")) NIL NIL)',
               'echo ': b'BODY[]',
               'echo 1': b'BODY[1]',
               'echo 1.1': b'BODY[1.1]',
               'echo 1.1.1': b'BODY[1.1.1]',
               'echo 1.1.MIME': b'BODY[1.1.MIME]',
               'echo 1.2': b'BODY[1.2]',
               'echo 1.HEADER': b'BODY[1.HEADER]',
               'echo 1.MIME': b'BODY[1.MIME]',
               'echo 2': b'BODY[2]',
               'echo 2.1': b'BODY[2.1]',
               'echo 2.1.1': b'BODY[2.1.1]',
               'echo 2.1.MIME': b'BODY[2.1.MIME]',
               'echo 2.2': b'BODY[2.2]',
               'echo 2.HEADER': b'BODY[2.HEADER]',
               'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
               'echo 2.MIME': b'BODY[2.MIME]',
               'echo 2.TEXT': b'BODY[2.TEXT]',
               'echo 3': b'BODY[3]',
               'echo HEADER': b'BODY[HEADER]',
               'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
               'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
               'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
               'echo TEXT': b'BODY[TEXT]'},
 'bare_lf': {'BODY': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1)("text" "plain" ('
                     b'"charset" "ISO-8859-1") NIL NIL "base64" 32 0) "mixed")',
             'BODYSTRUCTURE': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1 NIL N'
                              b'IL NIL NIL)("text" "plain" ("charset" "ISO-8859-1") NIL NIL "bas'
                              b'e64" 32 0 NIL NIL NIL NIL) "mixed" ("boundary" "zz") NIL NIL NIL)',
             'BODY[1.1.1]': b'',
             'BODY[1.1.MIME]': b'Content-Type: text/plain\r\n\r\n',
             'BODY[1.1]': b'one\r\ntwo',
             'BODY[1.2]': b'',
             'BODY[1.HEADER]': b'',
             'BODY[1.MIME]': b'Content-Type: text/plain\r\n\r\n',
             'BODY[1]': b'one\r\ntwo',
             'BODY[2.1.1]': b'',
             'BODY[2.1.MIME]': b'Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-E'
                               b'ncoding: base64\r\n\r\n',
             'BODY[2.1]': b'Q2hhcmxvdHRlIGV0IHBoaWxpcHBlCg==',
             'BODY[2.2]': b'',
             'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
             'BODY[2.HEADER]': b'',
             'BODY[2.MIME]': b'Content-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-E'
                             b'ncoding: base64\r\n\r\n',
             'BODY[2.TEXT]': b'',
             'BODY[2]': b'Q2hhcmxvdHRlIGV0IHBoaWxpcHBlCg==',
             'BODY[3]': b'',
             'BODY[HEADER.FIELDS (FROM TO)]': b'From: alice@a.example\r\n\r\n',
             'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
             'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Content-Type: multipart/mixed; boundary='
                                                       b'zz\r\n\r\n',
             'BODY[HEADER]': b'From: alice@a.example\r\nSubject: bare LF\r\nContent-Type: multipart'
                             b'/mixed; boundary=zz\r\n\r\n',
             'BODY[TEXT]': b'--zz\r\nContent-Type: text/plain\r\n\r\none\r\ntwo\r\n--zz\r\nConten'
                           b't-Type: text/plain; charset=ISO-8859-1\r\nContent-Transfer-Encoding: b'
                           b'ase64\r\n\r\nQ2hhcmxvdHRlIGV0IHBoaWxpcHBlCg==\r\n--zz--\r\n',
             'BODY[]': b'From: alice@a.example\r\nSubject: bare LF\r\nContent-Type: multipart/mix'
                       b'ed; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\none\r\ntw'
                       b'o\r\n--zz\r\nContent-Type: text/plain; charset=ISO-8859-1\r\nContent-Trans'
                       b'fer-Encoding: base64\r\n\r\nQ2hhcmxvdHRlIGV0IHBoaWxpcHBlCg==\r\n--zz--'
                       b'\r\n',
             'ENVELOPE': b'(NIL "bare LF" ((NIL NIL "alice" "a.example")) ((NIL NIL "alice" "a.exam'
                         b'ple")) ((NIL NIL "alice" "a.example")) NIL NIL NIL NIL NIL)',
             'echo ': b'BODY[]',
             'echo 1': b'BODY[1]',
             'echo 1.1': b'BODY[1.1]',
             'echo 1.1.1': b'BODY[1.1.1]',
             'echo 1.1.MIME': b'BODY[1.1.MIME]',
             'echo 1.2': b'BODY[1.2]',
             'echo 1.HEADER': b'BODY[1.HEADER]',
             'echo 1.MIME': b'BODY[1.MIME]',
             'echo 2': b'BODY[2]',
             'echo 2.1': b'BODY[2.1]',
             'echo 2.1.1': b'BODY[2.1.1]',
             'echo 2.1.MIME': b'BODY[2.1.MIME]',
             'echo 2.2': b'BODY[2.2]',
             'echo 2.HEADER': b'BODY[2.HEADER]',
             'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
             'echo 2.MIME': b'BODY[2.MIME]',
             'echo 2.TEXT': b'BODY[2.TEXT]',
             'echo 3': b'BODY[3]',
             'echo HEADER': b'BODY[HEADER]',
             'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
             'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
             'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
             'echo TEXT': b'BODY[TEXT]'},
 'digest': {'BODY': b'(("message" "rfc822" NIL NIL NIL "7bit" 38 (NIL "one" ((NIL NIL "a" "a.examp'
                    b'le")) ((NIL NIL "a" "a.example")) ((NIL NIL "a" "a.example")) NIL NIL NIL NI'
                    b'L NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0) 3)("messag'
                    b'e" "rfc822" NIL NIL NIL "7bit" 38 (NIL "two" ((NIL NIL "b" "b.example")) ((N'
                    b'IL NIL "b" "b.example")) ((NIL NIL "b" "b.example")) NIL NIL NIL NIL NIL) ("'
                    b'text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0) 3) "digest")',
            'BODYSTRUCTURE': b'(("message" "rfc822" NIL NIL NIL "7bit" 38 (NIL "one" ((NIL NIL "a" '
                             b'"a.example")) ((NIL NIL "a" "a.example")) ((NIL NIL "a" "a.example")'
                             b') NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NI'
                             b'L "7bit" 3 0 NIL NIL NIL NIL) 3 NIL NIL NIL NIL)("message" "rfc822" '
                             b'NIL NIL NIL "7bit" 38 (NIL "two" ((NIL NIL "b" "b.example")) ((NIL N'
                             b'IL "b" "b.example")) ((NIL NIL "b" "b.example")) NIL NIL NIL NIL NIL'
                             b') ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 3 0 NIL NIL '
                             b'NIL NIL) 3 NIL NIL NIL NIL) "digest" ("boundary" "d") NIL NIL NIL)',
            'BODY[1.1.1]': b'',
            'BODY[1.1.MIME]': b'From: a@a.example\r\nSubject: one\r\n\r\n',
            'BODY[1.1]': b'one',
            'BODY[1.2]': b'',
            'BODY[1.HEADER]': b'From: a@a.example\r\nSubject: one\r\n\r\n',
            'BODY[1.MIME]': b'\r\n',
            'BODY[1]': b'From: a@a.example\r\nSubject: one\r\n\r\none',
            'BODY[2.1.1]': b'',
            'BODY[2.1.MIME]': b'From: b@b.example\r\nSubject: two\r\n\r\n',
            'BODY[2.1]': b'two',
            'BODY[2.2]': b'',
            'BODY[2.HEADER.FIELDS (SUBJECT)]': b'Subject: two\r\n\r\n',
            'BODY[2.HEADER]': b'From: b@b.example\r\nSubject: two\r\n\r\n',
            'BODY[2.MIME]': b'\r\n',
            'BODY[2.TEXT]': b'two',
            'BODY[2]': b'From: b@b.example\r\nSubject: two\r\n\r\ntwo',
            'BODY[3]': b'',
            'BODY[HEADER.FIELDS (FROM TO)]': b'From: list@l.example\r\n\r\n',
            'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
            'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'MIME-Version: 1.0\r\nContent-Type: multipa'
                                                      b'rt/digest; boundary="d"\r\n\r\n',
            'BODY[HEADER]': b'From: list@l.example\r\nSubject: digest\r\nMIME-Version: 1.0\r\nCo'
                            b'ntent-Type: multipart/digest; boundary="d"\r\n\r\n',
            'BODY[TEXT]': b'--d\r\n\r\nFrom: a@a.example\r\nSubject: one\r\n\r\none\r\n--d\r\n'
                          b'\r\nFrom: b@b.example\r\nSubject: two\r\n\r\ntwo\r\n--d--\r\n',
            'BODY[]': b'From: list@l.example\r\nSubject: digest\r\nMIME-Version: 1.0\r\nContent-Ty'
                      b'pe: multipart/digest; boundary="d"\r\n\r\n--d\r\n\r\nFrom: a@a.example\r\n'
                      b'Subject: one\r\n\r\none\r\n--d\r\n\r\nFrom: b@b.example\r\nSubject: two\r'
                      b'\n\r\ntwo\r\n--d--\r\n',
            'ENVELOPE': b'(NIL "digest" ((NIL NIL "list" "l.example")) ((NIL NIL "list" "l.example'
                        b'")) ((NIL NIL "list" "l.example")) NIL NIL NIL NIL NIL)',
            'echo ': b'BODY[]',
            'echo 1': b'BODY[1]',
            'echo 1.1': b'BODY[1.1]',
            'echo 1.1.1': b'BODY[1.1.1]',
            'echo 1.1.MIME': b'BODY[1.1.MIME]',
            'echo 1.2': b'BODY[1.2]',
            'echo 1.HEADER': b'BODY[1.HEADER]',
            'echo 1.MIME': b'BODY[1.MIME]',
            'echo 2': b'BODY[2]',
            'echo 2.1': b'BODY[2.1]',
            'echo 2.1.1': b'BODY[2.1.1]',
            'echo 2.1.MIME': b'BODY[2.1.MIME]',
            'echo 2.2': b'BODY[2.2]',
            'echo 2.HEADER': b'BODY[2.HEADER]',
            'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
            'echo 2.MIME': b'BODY[2.MIME]',
            'echo 2.TEXT': b'BODY[2.TEXT]',
            'echo 3': b'BODY[3]',
            'echo HEADER': b'BODY[HEADER]',
            'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
            'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
            'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
            'echo TEXT': b'BODY[TEXT]'},
 'empty_multipart': {'BODY': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")',
                     'BODYSTRUCTURE': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0'
                                      b' 0 NIL NIL NIL NIL) "mixed" ("boundary" "e") NIL NIL NIL)',
                     'BODY[1.1.1]': b'',
                     'BODY[1.1.MIME]': b'',
                     'BODY[1.1]': b'',
                     'BODY[1.2]': b'',
                     'BODY[1.HEADER]': b'',
                     'BODY[1.MIME]': b'',
                     'BODY[1]': b'',
                     'BODY[2.1.1]': b'',
                     'BODY[2.1.MIME]': b'',
                     'BODY[2.1]': b'',
                     'BODY[2.2]': b'',
                     'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                     'BODY[2.HEADER]': b'',
                     'BODY[2.MIME]': b'',
                     'BODY[2.TEXT]': b'',
                     'BODY[2]': b'',
                     'BODY[3]': b'',
                     'BODY[HEADER.FIELDS (FROM TO)]': b'From: alice@a.example\r\n\r\n',
                     'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                     'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'MIME-Version: 1.0\r\nContent-Type:'
                                                               b' multipart/mixed; boundary="e"\r\n'
                                                               b'\r\n',
                     'BODY[HEADER]': b'From: alice@a.example\r\nSubject: empty multipart\r\nMIME-Ve'
                                     b'rsion: 1.0\r\nContent-Type: multipart/mixed; boundary="e"\r'
                                     b'\n\r\n',
                     'BODY[TEXT]': b'no parts at all\r\n',
                     'BODY[]': b'From: alice@a.example\r\nSubject: empty multipart\r\nMIME-Versio'
                               b'n: 1.0\r\nContent-Type: multipart/mixed; boundary="e"\r\n\r\nno pa'
                               b'rts at all\r\n',
                     'ENVELOPE': b'(NIL "empty multipart" ((NIL NIL "alice" "a.example")) ((NIL NIL'
                                 b' "alice" "a.example")) ((NIL NIL "alice" "a.example")) NIL NIL N'
                                 b'IL NIL NIL)',
                     'echo ': b'BODY[]',
                     'echo 1': b'BODY[1]',
                     'echo 1.1': b'BODY[1.1]',
                     'echo 1.1.1': b'BODY[1.1.1]',
                     'echo 1.1.MIME': b'BODY[1.1.MIME]',
                     'echo 1.2': b'BODY[1.2]',
                     'echo 1.HEADER': b'BODY[1.HEADER]',
                     'echo 1.MIME': b'BODY[1.MIME]',
                     'echo 2': b'BODY[2]',
                     'echo 2.1': b'BODY[2.1]',
                     'echo 2.1.1': b'BODY[2.1.1]',
                     'echo 2.1.MIME': b'BODY[2.1.MIME]',
                     'echo 2.2': b'BODY[2.2]',
                     'echo 2.HEADER': b'BODY[2.HEADER]',
                     'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                     'echo 2.MIME': b'BODY[2.MIME]',
                     'echo 2.TEXT': b'BODY[2.TEXT]',
                     'echo 3': b'BODY[3]',
                     'echo HEADER': b'BODY[HEADER]',
                     'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                     'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                     'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT '
                                                              b'FROM)]',
                     'echo TEXT': b'BODY[TEXT]'},
 'encoded': {'BODY': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1)',
             'BODYSTRUCTURE': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 8 1 NIL NI'
                              b'L NIL NIL)',
             'BODY[1.1.1]': b'',
             'BODY[1.1.MIME]': b'',
             'BODY[1.1]': b'',
             'BODY[1.2]': b'',
             'BODY[1.HEADER]': b'',
             'BODY[1.MIME]': b'Date: Thu, 26 Nov 2026 12:00:00 +0100\r\nFrom: =?UTF-8?Q?Ren=C3=A9'
                             b'_Dupr=C3=A9?= <rene@a.example>\r\nTo: =?iso-8859-1?q?Fran=E7oise?='
                             b' <francoise@b.example>,\r\n "=?UTF-8?B?w4lsb2RpZQ==?=" <elodie@b.e'
                             b'xample>\r\nSubject: =?UTF-8?B?UsOpc3VsdGF0cyBkJ2FuYWx5c2U=?=\r\n =?U'
                             b'TF-8?Q?_urgents?=\r\nMessage-ID: <4@a.example>\r\nIn-Reply-To: <3@c.'
                             b'example> <2@a.example>\r\n\r\n',
             'BODY[1]': b'Texte.\r\n',
             'BODY[2.1.1]': b'',
             'BODY[2.1.MIME]': b'',
             'BODY[2.1]': b'',
             'BODY[2.2]': b'',
             'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
             'BODY[2.HEADER]': b'',
             'BODY[2.MIME]': b'',
             'BODY[2.TEXT]': b'',
             'BODY[2]': b'',
             'BODY[3]': b'',
             'BODY[HEADER.FIELDS (FROM TO)]': b'From: =?UTF-8?Q?Ren=C3=A9_Dupr=C3=A9?= <rene@a.e'
                                              b'xample>\r\nTo: =?iso-8859-1?q?Fran=E7oise?= <franc'
                                              b'oise@b.example>,\r\n "=?UTF-8?B?w4lsb2RpZQ==?=" <e'
                                              b'lodie@b.example>\r\n\r\n',
             'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
             'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Date: Thu, 26 Nov 2026 12:00:00 +0100\r\nT'
                                                       b'o: =?iso-8859-1?q?Fran=E7oise?= <francoi'
                                                       b'se@b.example>,\r\n "=?UTF-8?B?w4lsb2RpZQ=='
                                                       b'?=" <elodie@b.example>\r\nMessage-ID: <4@a'
                                                       b'.example>\r\nIn-Reply-To: <3@c.example> <2'
                                                       b'@a.example>\r\n\r\n',
             'BODY[HEADER]': b'Date: Thu, 26 Nov 2026 12:00:00 +0100\r\nFrom: =?UTF-8?Q?Ren=C3=A9'
                             b'_Dupr=C3=A9?= <rene@a.example>\r\nTo: =?iso-8859-1?q?Fran=E7oise?='
                             b' <francoise@b.example>,\r\n "=?UTF-8?B?w4lsb2RpZQ==?=" <elodie@b.e'
                             b'xample>\r\nSubject: =?UTF-8?B?UsOpc3VsdGF0cyBkJ2FuYWx5c2U=?=\r\n =?U'
                             b'TF-8?Q?_urgents?=\r\nMessage-ID: <4@a.example>\r\nIn-Reply-To: <3@c.'
                             b'example> <2@a.example>\r\n\r\n',
             'BODY[TEXT]': b'Texte.\r\n',
             'BODY[]': b'Date: Thu, 26 Nov 2026 12:00:00 +0100\r\nFrom: =?UTF-8?Q?Ren=C3=A9_Dupr=C3'
                       b'=A9?= <rene@a.example>\r\nTo: =?iso-8859-1?q?Fran=E7oise?= <francoise@b.ex'
                       b'ample>,\r\n "=?UTF-8?B?w4lsb2RpZQ==?=" <elodie@b.example>\r\nSubject: =?'
                       b'UTF-8?B?UsOpc3VsdGF0cyBkJ2FuYWx5c2U=?=\r\n =?UTF-8?Q?_urgents?=\r\nMessa'
                       b'ge-ID: <4@a.example>\r\nIn-Reply-To: <3@c.example> <2@a.example>\r\n\r\nTe'
                       b'xte.\r\n',
             'ENVELOPE': b'("Thu, 26 Nov 2026 12:00:00 +0100" {61}\r\n=?UTF-8?B?UsOpc3VsdGF0cyBkJ'
                         b'2FuYWx5c2U=?= =?UTF-8?Q?_urgents?= (("=?UTF-8?Q?Ren=C3=A9_Dupr=C3=A9?=" '
                         b'NIL "rene" "a.example")) (("=?UTF-8?Q?Ren=C3=A9_Dupr=C3=A9?=" NIL "rene"'
                         b' "a.example")) (("=?UTF-8?Q?Ren=C3=A9_Dupr=C3=A9?=" NIL "rene" "a.exampl'
                         b'e")) (("=?iso-8859-1?q?Fran=E7oise?=" NIL "francoise" "b.example")("=?UT'
                         b'F-8?B?w4lsb2RpZQ==?=" NIL "elodie" "b.example")) NIL NIL "<3@c.example> '
                         b'<2@a.example>" "<4@a.example>")',
             'echo ': b'BODY[]',
             'echo 1': b'BODY[1]',
             'echo 1.1': b'BODY[1.1]',
             'echo 1.1.1': b'BODY[1.1.1]',
             'echo 1.1.MIME': b'BODY[1.1.MIME]',
             'echo 1.2': b'BODY[1.2]',
             'echo 1.HEADER': b'BODY[1.HEADER]',
             'echo 1.MIME': b'BODY[1.MIME]',
             'echo 2': b'BODY[2]',
             'echo 2.1': b'BODY[2.1]',
             'echo 2.1.1': b'BODY[2.1.1]',
             'echo 2.1.MIME': b'BODY[2.1.MIME]',
             'echo 2.2': b'BODY[2.2]',
             'echo 2.HEADER': b'BODY[2.HEADER]',
             'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
             'echo 2.MIME': b'BODY[2.MIME]',
             'echo 2.TEXT': b'BODY[2.TEXT]',
             'echo 3': b'BODY[3]',
             'echo HEADER': b'BODY[HEADER]',
             'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
             'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
             'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
             'echo TEXT': b'BODY[TEXT]'},
 'folded': {'BODY': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 44 1)',
            'BODYSTRUCTURE': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 44 1 NIL NIL N'
                             b'IL NIL)',
            'BODY[1.1.1]': b'',
            'BODY[1.1.MIME]': b'',
            'BODY[1.1]': b'',
            'BODY[1.2]': b'',
            'BODY[1.HEADER]': b'',
            'BODY[1.MIME]': b'Date: Sun, 29 Nov 2026 12:00:00 +0100\r\nFrom: alice@a.example (Al'
                            b'ice in a comment)\r\nTo: bob@b.example\r\nSubject: a folded\r\n\tsu'
                            b'bject with "quotes" and \\backslash\r\nMessage-ID:\r\n <7@a.examp'
                            b'le>\r\nX-Priority: 1\r\n\r\n',
            'BODY[1]': b'Body with a long line and the word needle.\r\n',
            'BODY[2.1.1]': b'',
            'BODY[2.1.MIME]': b'',
            'BODY[2.1]': b'',
            'BODY[2.2]': b'',
            'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
            'BODY[2.HEADER]': b'',
            'BODY[2.MIME]': b'',
            'BODY[2.TEXT]': b'',
            'BODY[2]': b'',
            'BODY[3]': b'',
            'BODY[HEADER.FIELDS (FROM TO)]': b'From: alice@a.example (Alice in a comment)\r\nTo: '
                                             b'bob@b.example\r\n\r\n',
            'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
            'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Date: Sun, 29 Nov 2026 12:00:00 +0100\r\nT'
                                                      b'o: bob@b.example\r\nMessage-ID:\r\n <7@a'
                                                      b'.example>\r\nX-Priority: 1\r\n\r\n',
            'BODY[HEADER]': b'Date: Sun, 29 Nov 2026 12:00:00 +0100\r\nFrom: alice@a.example (Al'
                            b'ice in a comment)\r\nTo: bob@b.example\r\nSubject: a folded\r\n\tsu'
                            b'bject with "quotes" and \\backslash\r\nMessage-ID:\r\n <7@a.examp'
                            b'le>\r\nX-Priority: 1\r\n\r\n',
            'BODY[TEXT]': b'Body with a long line and the word needle.\r\n',
            'BODY[]': b'Date: Sun, 29 Nov 2026 12:00:00 +0100\r\nFrom: alice@a.example (Alice in a'
                      b' comment)\r\nTo: bob@b.example\r\nSubject: a folded\r\n\tsubject with "quot'
                      b'es" and \\backslash\r\nMessage-ID:\r\n <7@a.example>\r\nX-Priority: 1\r\n'
                      b'\r\nBody with a long line and the word needle.\r\n',
            'ENVELOPE': b'("Sun, 29 Nov 2026 12:00:00 +0100" {45}\r\na folded subject with "quot'
                        b'es" and \\backslash (("Alice in a comment" NIL "alice" "a.example")) (("A'
                        b'lice in a comment" NIL "alice" "a.example")) (("Alice in a comment" NIL '
                        b'"alice" "a.example")) ((NIL NIL "bob" "b.example")) NIL NIL NIL " <7@a.e'
                        b'xample>")',
            'echo ': b'BODY[]',
            'echo 1': b'BODY[1]',
            'echo 1.1': b'BODY[1.1]',
            'echo 1.1.1': b'BODY[1.1.1]',
            'echo 1.1.MIME': b'BODY[1.1.MIME]',
            'echo 1.2': b'BODY[1.2]',
            'echo 1.HEADER': b'BODY[1.HEADER]',
            'echo 1.MIME': b'BODY[1.MIME]',
            'echo 2': b'BODY[2]',
            'echo 2.1': b'BODY[2.1]',
            'echo 2.1.1': b'BODY[2.1.1]',
            'echo 2.1.MIME': b'BODY[2.1.MIME]',
            'echo 2.2': b'BODY[2.2]',
            'echo 2.HEADER': b'BODY[2.HEADER]',
            'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
            'echo 2.MIME': b'BODY[2.MIME]',
            'echo 2.TEXT': b'BODY[2.TEXT]',
            'echo 3': b'BODY[3]',
            'echo HEADER': b'BODY[HEADER]',
            'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
            'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
            'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
            'echo TEXT': b'BODY[TEXT]'},
 'folded2': {'BODY': b'((("text" "" ("charset" "us-ascii") NIL NIL "7BIT" 10 0)("application" "x-th'
                     b'ing" ("charset" "utf-8") NIL NIL "7bit" 5) "alternative")("message" "rfc822"'
                     b' NIL NIL NIL "7bit" 41 (NIL "inner" ((NIL NIL "inner" "i.example")) ((NIL NI'
                     b'L "inner" "i.example")) ((NIL NIL "inner" "i.example")) NIL NIL NIL NIL NIL)'
                     b' ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) 3)("text" "plain'
                     b'" ("charset" "") NIL NIL "7bit" 35 0) "mixed")',
             'BODYSTRUCTURE': b'((("text" "" ("charset" "us-ascii") NIL NIL "7BIT" 10 0 NIL NIL '
                              b'NIL NIL)("application" "x-thing" ("charset" "utf-8") NIL NIL "7b'
                              b'it" 5 NIL NIL NIL NIL) "alternative" ("boundary" "abcd") NIL NIL'
                              b' NIL)("message" "rfc822" NIL NIL NIL "7bit" 41 (NIL "inner" ((NI'
                              b'L NIL "inner" "i.example")) ((NIL NIL "inner" "i.example")) ((NI'
                              b'L NIL "inner" "i.example")) NIL NIL NIL NIL NIL) ("text" "plain"'
                              b' ("charset" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 3 NI'
                              b'L NIL NIL NIL)("text" "plain" ("charset" "") NIL NIL "7bit" 35 0'
                              b' NIL NIL NIL NIL) "mixed" ("boundary" "abc") NIL NIL NIL)',
             'BODY[1.1.1]': b'no subtype',
             'BODY[1.1.MIME]': b'Content-Type: text\r\nContent-Transfer-Encoding: 7BIT\r\n\r\n',
             'BODY[1.1]': b'no subtype',
             'BODY[1.2]': b'thing',
             'BODY[1.HEADER]': b'',
             'BODY[1.MIME]': b'Content-Type: multipart/alternative; boundary="abcd"\r\nContent-De'
                             b'scription: folded\r\n description\r\n\r\n',
             'BODY[1]': b'--abcd\r\nContent-Type: text\r\nContent-Transfer-Encoding: 7BIT\r\n\r\nn'
                        b'o subtype\r\n--abcd\r\nContent-Type: application/x-thing; charset=utf-8\r'
                        b'\n\r\nthing\r\n--abcd--\r\n',
             'BODY[2.1.1]': b'',
             'BODY[2.1.MIME]': b'From: inner@i.example\r\nSubject: inner\r\n',
             'BODY[2.1]': b'',
             'BODY[2.2]': b'',
             'BODY[2.HEADER.FIELDS (SUBJECT)]': b'Subject: inner\r\n\r\n',
             'BODY[2.HEADER]': b'From: inner@i.example\r\nSubject: inner\r\n',
             'BODY[2.MIME]': b'Content-Type: message/rfc822\r\n\r\n',
             'BODY[2.TEXT]': b'',
             'BODY[2]': b'From: inner@i.example\r\nSubject: inner\r\n\r\n',
             'BODY[3]': b'after an unterminated inner message',
             'BODY[HEADER.FIELDS (FROM TO)]': b'From: "Alice\r\n Martin" <alice@a.example>\r\nTo'
                                              b': bob@b.example,\r\n\tcarol@c.example\r\n\r\n',
             'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
             'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Date: Mon, 30 Nov 2026\r\n 12:00:00 +0'
                                                       b'100\r\nTo: bob@b.example,\r\n\tcarol@c.ex'
                                                       b'ample\r\nIn-Reply-To: <a@a.example>\r\n '
                                                       b'<b@b.example>\r\nMessage-ID: <8@a.example>'
                                                       b'\r\nMIME-Version: 1.0\r\nContent-Type: m'
                                                       b'ultipart/mixed; boundary="abc"\r\n\r\n',
             'BODY[HEADER]': b'Date: Mon, 30 Nov 2026\r\n 12:00:00 +0100\r\nFrom: "Alice\r\n Mart'
                             b'in" <alice@a.example>\r\nTo: bob@b.example,\r\n\tcarol@c.example\r'
                             b'\nSubject: first subject\r\nSubject: second subject\r\nIn-Reply-T'
                             b'o: <a@a.example>\r\n <b@b.example>\r\nMessage-ID: <8@a.example>\r'
                             b'\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="abc'
                             b'"\r\n\r\n',
             'BODY[TEXT]': b'--abc\r\nContent-Type: multipart/alternative; boundary="abcd"\r\nCon'
                           b'tent-Description: folded\r\n description\r\n\r\n--abcd\r\nContent-Ty'
                           b'pe: text\r\nContent-Transfer-Encoding: 7BIT\r\n\r\nno subtype\r\n--a'
                           b'bcd\r\nContent-Type: application/x-thing; charset=utf-8\r\n\r\nthi'
                           b'ng\r\n--abcd--\r\n--abc\r\nContent-Type: message/rfc822\r\n\r\nFrom: i'
                           b'nner@i.example\r\nSubject: inner\r\n\r\n--abc\r\nContent-Type: text/'
                           b'plain; charset=""\r\n\r\nafter an unterminated inner message\r\n--abc-'
                           b'-\r\n',
             'BODY[]': b'Date: Mon, 30 Nov 2026\r\n 12:00:00 +0100\r\nFrom: "Alice\r\n Martin" <ali'
                       b'ce@a.example>\r\nTo: bob@b.example,\r\n\tcarol@c.example\r\nSubject: fi'
                       b'rst subject\r\nSubject: second subject\r\nIn-Reply-To: <a@a.example>\r\n <'
                       b'b@b.example>\r\nMessage-ID: <8@a.example>\r\nMIME-Version: 1.0\r\nContent-'
                       b'Type: multipart/mixed; boundary="abc"\r\n\r\n--abc\r\nContent-Type: multip'
                       b'art/alternative; boundary="abcd"\r\nContent-Description: folded\r\n desc'
                       b'ription\r\n\r\n--abcd\r\nContent-Type: text\r\nContent-Transfer-Encoding'
                       b': 7BIT\r\n\r\nno subtype\r\n--abcd\r\nContent-Type: application/x-thing;'
                       b' charset=utf-8\r\n\r\nthing\r\n--abcd--\r\n--abc\r\nContent-Type: message/'
                       b'rfc822\r\n\r\nFrom: inner@i.example\r\nSubject: inner\r\n\r\n--abc\r\nCo'
                       b'ntent-Type: text/plain; charset=""\r\n\r\nafter an unterminated inner me'
                       b'ssage\r\n--abc--\r\n',
             'ENVELOPE': b'("Mon, 30 Nov 2026 12:00:00 +0100" "second subject" (("Alice Martin" NIL'
                         b' "alice" "a.example")) (("Alice Martin" NIL "alice" "a.example")) (("Ali'
                         b'ce Martin" NIL "alice" "a.example")) ((NIL NIL "bob" "b.example")(NIL NI'
                         b'L "carol" "c.example")) NIL NIL "<a@a.example> <b@b.example>" "<8@a.exam'
                         b'ple>")',
             'echo ': b'BODY[]',
             'echo 1': b'BODY[1]',
             'echo 1.1': b'BODY[1.1]',
             'echo 1.1.1': b'BODY[1.1.1]',
             'echo 1.1.MIME': b'BODY[1.1.MIME]',
             'echo 1.2': b'BODY[1.2]',
             'echo 1.HEADER': b'BODY[1.HEADER]',
             'echo 1.MIME': b'BODY[1.MIME]',
             'echo 2': b'BODY[2]',
             'echo 2.1': b'BODY[2.1]',
             'echo 2.1.1': b'BODY[2.1.1]',
             'echo 2.1.MIME': b'BODY[2.1.MIME]',
             'echo 2.2': b'BODY[2.2]',
             'echo 2.HEADER': b'BODY[2.HEADER]',
             'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
             'echo 2.MIME': b'BODY[2.MIME]',
             'echo 2.TEXT': b'BODY[2.TEXT]',
             'echo 3': b'BODY[3]',
             'echo HEADER': b'BODY[HEADER]',
             'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
             'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
             'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
             'echo TEXT': b'BODY[TEXT]'},
 'fuzz_cut_digest': {'BODY': b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "digest'
                             b'")("text" "plain" ("charset" "us-ascii") NIL NIL "base64" 0 0) "mixe'
                             b'd")',
                     'BODYSTRUCTURE': b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" '
                                      b'0 0 NIL NIL NIL NIL) "digest" ("boundary" "b") NIL NIL N'
                                      b'IL)("text" "plain" ("charset" "us-ascii") NIL NIL "base6'
                                      b'4" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "b") NIL NIL'
                                      b' NIL)',
                     'BODY[1.1.1]': b'',
                     'BODY[1.1.MIME]': b'',
                     'BODY[1.1]': b'',
                     'BODY[1.2]': b'',
                     'BODY[1.HEADER]': b'',
                     'BODY[1.MIME]': b'Content-Type: multipart/digest; boundary=b\r\nContent-Desc'
                                     b'ription: d\xc3\xa9\r\nContent-Type: ;',
                     'BODY[1]': b'',
                     'BODY[2.1.1]': b'',
                     'BODY[2.1.MIME]': b'Content-Transfer-Encoding: base64',
                     'BODY[2.1]': b'',
                     'BODY[2.2]': b'',
                     'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                     'BODY[2.HEADER]': b'',
                     'BODY[2.MIME]': b'Content-Transfer-Encoding: base64',
                     'BODY[2.TEXT]': b'',
                     'BODY[2]': b'',
                     'BODY[3]': b'',
                     'BODY[HEADER.FIELDS (FROM TO)]': b'\r\n',
                     'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                     'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Content-Type: multipart/mixed; b'
                                                               b'oundary=b\r\n\r\n',
                     'BODY[HEADER]': b'Content-Type: multipart/mixed; boundary=b\r\n\r\n',
                     'BODY[TEXT]': b'Sender: x\r\nContent-Transfer-Encoding: base64\r\ntext line\r'
                                   b'\nMessage-ID: <m@x>\r\nContent-Type: MESSAGE/RFC822\r\n\tfolde'
                                   b'd tab\r\ntext line\r\n--b\r\nContent-Type: multipart/digest; b'
                                   b'oundary=b\r\nContent-Description: d\xc3\xa9\r\nContent-Type: ;'
                                   b'\r\n--b\r\nContent-Transfer-Encoding: base64',
                     'BODY[]': b'Content-Type: multipart/mixed; boundary=b\r\n\r\nSender: x\r\nCont'
                               b'ent-Transfer-Encoding: base64\r\ntext line\r\nMessage-ID: <m@x>\r'
                               b'\nContent-Type: MESSAGE/RFC822\r\n\tfolded tab\r\ntext line\r\n-'
                               b'-b\r\nContent-Type: multipart/digest; boundary=b\r\nContent-Desc'
                               b'ription: d\xc3\xa9\r\nContent-Type: ;\r\n--b\r\nContent-Transfer'
                               b'-Encoding: base64',
                     'ENVELOPE': b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)',
                     'echo ': b'BODY[]',
                     'echo 1': b'BODY[1]',
                     'echo 1.1': b'BODY[1.1]',
                     'echo 1.1.1': b'BODY[1.1.1]',
                     'echo 1.1.MIME': b'BODY[1.1.MIME]',
                     'echo 1.2': b'BODY[1.2]',
                     'echo 1.HEADER': b'BODY[1.HEADER]',
                     'echo 1.MIME': b'BODY[1.MIME]',
                     'echo 2': b'BODY[2]',
                     'echo 2.1': b'BODY[2.1]',
                     'echo 2.1.1': b'BODY[2.1.1]',
                     'echo 2.1.MIME': b'BODY[2.1.MIME]',
                     'echo 2.2': b'BODY[2.2]',
                     'echo 2.HEADER': b'BODY[2.HEADER]',
                     'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                     'echo 2.MIME': b'BODY[2.MIME]',
                     'echo 2.TEXT': b'BODY[2.TEXT]',
                     'echo 3': b'BODY[3]',
                     'echo HEADER': b'BODY[HEADER]',
                     'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                     'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                     'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT '
                                                              b'FROM)]',
                     'echo TEXT': b'BODY[TEXT]'},
 'fuzz_cut_header': {'BODY': b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "digest'
                             b'") "mixed")',
                     'BODYSTRUCTURE': b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" '
                                      b'0 0 NIL NIL NIL NIL) "digest" ("boundary" "b") NIL NIL N'
                                      b'IL) "mixed" ("boundary" "b") NIL NIL NIL)',
                     'BODY[1.1.1]': b'',
                     'BODY[1.1.MIME]': b'',
                     'BODY[1.1]': b'',
                     'BODY[1.2]': b'',
                     'BODY[1.HEADER]': b'',
                     'BODY[1.MIME]': b'Date: Mon, 1 Jan 2024 00:00:00 +0000\r\nContent-Type: mult'
                                     b'ipart/digest; boundary=b',
                     'BODY[1]': b'',
                     'BODY[2.1.1]': b'',
                     'BODY[2.1.MIME]': b'',
                     'BODY[2.1]': b'',
                     'BODY[2.2]': b'',
                     'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                     'BODY[2.HEADER]': b'',
                     'BODY[2.MIME]': b'',
                     'BODY[2.TEXT]': b'',
                     'BODY[2]': b'',
                     'BODY[3]': b'',
                     'BODY[HEADER.FIELDS (FROM TO)]': b'To: g: h@i;\r\n\tfolded tab\r\n\tfolded ta'
                                                      b'b\r\n\r\n',
                     'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                     'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Content-Type: multipart/mixed; b'
                                                               b'oundary=b\r\nContent-Type: text/ht'
                                                               b'ml\r\nMessage-ID: <m@x>\r\nTo: g'
                                                               b': h@i;\r\n\tfolded tab\r\n\tfolded'
                                                               b' tab\r\nContent-Type: ;\r\n--b  '
                                                               b'\r\n\r\n',
                     'BODY[HEADER]': b'Content-Type: multipart/mixed; boundary=b\r\nContent-Type:'
                                     b' text/html\r\nSubject: caf\xc3\xa9\r\nMessage-ID: <m@x>\r\nT'
                                     b'o: g: h@i;\r\n\tfolded tab\r\n\tfolded tab\r\nContent-Type: '
                                     b';\r\n--b  \r\n\r\n',
                     'BODY[TEXT]': b'--c\r\nContent-Type: message/rfc822\r\n--b  \r\nDate: Mon, 1 J'
                                   b'an 2024 00:00:00 +0000\r\nContent-Type: multipart/digest; boun'
                                   b'dary=b\r\n--b--\r\nFrom: "q\\"x" <a@b>\r\nMessage-ID: <m@x>'
                                   b'\r\nContent-Type: text',
                     'BODY[]': b'Content-Type: multipart/mixed; boundary=b\r\nContent-Type: text/ht'
                               b'ml\r\nSubject: caf\xc3\xa9\r\nMessage-ID: <m@x>\r\nTo: g: h@i;\r\n'
                               b'\tfolded tab\r\n\tfolded tab\r\nContent-Type: ;\r\n--b  \r\n\r\n'
                               b'--c\r\nContent-Type: message/rfc822\r\n--b  \r\nDate: Mon, 1 Jan 2'
                               b'024 00:00:00 +0000\r\nContent-Type: multipart/digest; boundary'
                               b'=b\r\n--b--\r\nFrom: "q\\"x" <a@b>\r\nMessage-ID: <m@x>\r\nConten'
                               b't-Type: text',
                     'ENVELOPE': b'(NIL {5}\r\ncaf\xc3\xa9 NIL NIL NIL ((NIL NIL "g" NIL)(NIL NIL "'
                                 b'h" "i")(NIL NIL NIL NIL)) NIL NIL NIL "<m@x>")',
                     'echo ': b'BODY[]',
                     'echo 1': b'BODY[1]',
                     'echo 1.1': b'BODY[1.1]',
                     'echo 1.1.1': b'BODY[1.1.1]',
                     'echo 1.1.MIME': b'BODY[1.1.MIME]',
                     'echo 1.2': b'BODY[1.2]',
                     'echo 1.HEADER': b'BODY[1.HEADER]',
                     'echo 1.MIME': b'BODY[1.MIME]',
                     'echo 2': b'BODY[2]',
                     'echo 2.1': b'BODY[2.1]',
                     'echo 2.1.1': b'BODY[2.1.1]',
                     'echo 2.1.MIME': b'BODY[2.1.MIME]',
                     'echo 2.2': b'BODY[2.2]',
                     'echo 2.HEADER': b'BODY[2.HEADER]',
                     'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                     'echo 2.MIME': b'BODY[2.MIME]',
                     'echo 2.TEXT': b'BODY[2.TEXT]',
                     'echo 3': b'BODY[3]',
                     'echo HEADER': b'BODY[HEADER]',
                     'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                     'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                     'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT '
                                                              b'FROM)]',
                     'echo TEXT': b'BODY[TEXT]'},
 'fuzz_cut_rfc822': {'BODY': b'(("message" "rfc822" NIL NIL NIL "7bit" 0 (NIL NIL NIL NIL NIL NIL N'
                             b'IL NIL NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit'
                             b'" 0 0) 0)("application" "octet-stream" NIL NIL NIL "7bit" 0) "digest'
                             b'")',
                     'BODYSTRUCTURE': b'(("message" "rfc822" NIL NIL NIL "7bit" 0 (NIL NIL NIL N'
                                      b'IL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "'
                                      b'us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL) 0 NIL NIL'
                                      b' NIL NIL)("application" "octet-stream" NIL NIL NIL "7bit'
                                      b'" 0 NIL NIL NIL NIL) "digest" ("boundary" "b") NIL NIL N'
                                      b'IL)',
                     'BODY[1.1.1]': b'',
                     'BODY[1.1.MIME]': b'',
                     'BODY[1.1]': b'',
                     'BODY[1.2]': b'',
                     'BODY[1.HEADER]': b'',
                     'BODY[1.MIME]': b'Content-Type: MESSAGE/RFC822',
                     'BODY[1]': b'',
                     'BODY[2.1.1]': b'',
                     'BODY[2.1.MIME]': b'Content-Type: application/octet-stream\r\nFrom: Dr. X <x@y'
                                       b'> (com)',
                     'BODY[2.1]': b'',
                     'BODY[2.2]': b'',
                     'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                     'BODY[2.HEADER]': b'',
                     'BODY[2.MIME]': b'Content-Type: application/octet-stream\r\nFrom: Dr. X <x@y'
                                     b'> (com)',
                     'BODY[2.TEXT]': b'',
                     'BODY[2]': b'',
                     'BODY[3]': b'',
                     'BODY[HEADER.FIELDS (FROM TO)]': b'From: a@b, (c) <d@e>\r\n\r\n',
                     'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                     'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Content-Type: multipart/digest; '
                                                               b'boundary=b\r\n\r\n',
                     'BODY[HEADER]': b'Content-Type: multipart/digest; boundary=b\r\nFrom: a@b, ('
                                     b'c) <d@e>\r\n\r\n',
                     'BODY[TEXT]': b'From: "q\\"x" <a@b>\r\nFrom: "q\\"x" <a@b>\r\n=C3=A9\r\nRepl'
                                   b'y-To: <>\r\nTo: g: h@i;\r\nCc: ,,a@b,,\r\nContent-Transfer-Enc'
                                   b'oding: base64\r\n=C3=A9\r\nSubject: caf\xc3\xa9\r\n--b\r\nCont'
                                   b'ent-Type: MESSAGE/RFC822\r\n--b\r\nContent-Type: application'
                                   b'/octet-stream\r\nFrom: Dr. X <x@y> (com)',
                     'BODY[]': b'Content-Type: multipart/digest; boundary=b\r\nFrom: a@b, (c) <d@e>'
                               b'\r\n\r\nFrom: "q\\"x" <a@b>\r\nFrom: "q\\"x" <a@b>\r\n=C3=A9\r\n'
                               b'Reply-To: <>\r\nTo: g: h@i;\r\nCc: ,,a@b,,\r\nContent-Transfer-Enc'
                               b'oding: base64\r\n=C3=A9\r\nSubject: caf\xc3\xa9\r\n--b\r\nContent-'
                               b'Type: MESSAGE/RFC822\r\n--b\r\nContent-Type: application/octet-s'
                               b'tream\r\nFrom: Dr. X <x@y> (com)',
                     'ENVELOPE': b'(NIL NIL ((NIL NIL "a" "b")(NIL NIL "d" "e")) ((NIL NIL "a" "b")'
                                 b'(NIL NIL "d" "e")) ((NIL NIL "a" "b")(NIL NIL "d" "e")) NIL NIL '
                                 b'NIL NIL NIL)',
                     'echo ': b'BODY[]',
                     'echo 1': b'BODY[1]',
                     'echo 1.1': b'BODY[1.1]',
                     'echo 1.1.1': b'BODY[1.1.1]',
                     'echo 1.1.MIME': b'BODY[1.1.MIME]',
                     'echo 1.2': b'BODY[1.2]',
                     'echo 1.HEADER': b'BODY[1.HEADER]',
                     'echo 1.MIME': b'BODY[1.MIME]',
                     'echo 2': b'BODY[2]',
                     'echo 2.1': b'BODY[2.1]',
                     'echo 2.1.1': b'BODY[2.1.1]',
                     'echo 2.1.MIME': b'BODY[2.1.MIME]',
                     'echo 2.2': b'BODY[2.2]',
                     'echo 2.HEADER': b'BODY[2.HEADER]',
                     'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                     'echo 2.MIME': b'BODY[2.MIME]',
                     'echo 2.TEXT': b'BODY[2.TEXT]',
                     'echo 3': b'BODY[3]',
                     'echo HEADER': b'BODY[HEADER]',
                     'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                     'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                     'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT '
                                                              b'FROM)]',
                     'echo TEXT': b'BODY[TEXT]'},
 'fuzz_empty_body_mime': {'BODY': b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)'
                                  b' "mixed")("text" "html" ("charset" "us-ascii") NIL NIL "7bit'
                                  b'" 0 0)("message" "rfc822" NIL NIL NIL "7bit" 0 (NIL NIL NIL '
                                  b'NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("charset" "us-'
                                  b'ascii") NIL NIL "7bit" 0 0) 0)("message" "rfc822" NIL NIL NI'
                                  b'L "7bit" 0 (NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL) ("text"'
                                  b' "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) 0) "dige'
                                  b'st")',
                          'BODYSTRUCTURE': b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7b'
                                           b'it" 0 0 NIL NIL NIL NIL) "mixed" ("boundary" "c") NI'
                                           b'L NIL NIL)("text" "html" ("charset" "us-ascii") NIL '
                                           b'NIL "7bit" 0 0 NIL NIL NIL NIL)("message" "rfc822" N'
                                           b'IL NIL NIL "7bit" 0 (NIL NIL NIL NIL NIL NIL NIL NIL'
                                           b' NIL NIL) ("text" "plain" ("charset" "us-ascii") NIL'
                                           b' NIL "7bit" 0 0 NIL NIL NIL NIL) 0 NIL NIL NIL NIL)('
                                           b'"message" "rfc822" NIL NIL NIL "7bit" 0 (NIL NIL NIL'
                                           b' NIL NIL NIL NIL NIL NIL NIL) ("text" "plain" ("char'
                                           b'set" "us-ascii") NIL NIL "7bit" 0 0 NIL NIL NIL NIL)'
                                           b' 0 NIL NIL NIL NIL) "digest" ("boundary" "b") ("atta'
                                           b'chment" ("filename" "a b.txt")) NIL NIL)',
                          'BODY[1.1.1]': b'',
                          'BODY[1.1.MIME]': b'',
                          'BODY[1.1]': b'',
                          'BODY[1.2]': b'',
                          'BODY[1.HEADER]': b'',
                          'BODY[1.MIME]': b'Cc: ,,a@b,,\r\nContent-Type: multipart/mixed; boundary'
                                          b'=c\r\n',
                          'BODY[1]': b'',
                          'BODY[2.1.1]': b'',
                          'BODY[2.1.MIME]': b'From: a@b, (c) <d@e>\r\ntext line\r\nContent-Type: t'
                                            b'ext/html\r\nFrom: a@b, (c) <d@e>\r\nContent-Type: ME'
                                            b'SSAGE/RFC822\r\nReply-To: <>',
                          'BODY[2.1]': b'',
                          'BODY[2.2]': b'',
                          'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                          'BODY[2.HEADER]': b'',
                          'BODY[2.MIME]': b'From: a@b, (c) <d@e>\r\ntext line\r\nContent-Type: t'
                                          b'ext/html\r\nFrom: a@b, (c) <d@e>\r\nContent-Type: ME'
                                          b'SSAGE/RFC822\r\nReply-To: <>',
                          'BODY[2.TEXT]': b'',
                          'BODY[2]': b'',
                          'BODY[3]': b'',
                          'BODY[HEADER.FIELDS (FROM TO)]': b'\r\n',
                          'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                          'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Content-Type: multipart/dige'
                                                                    b'st; boundary=b\r\nContent-'
                                                                    b'Transfer-Encoding: base6'
                                                                    b'4\r\nContent-Disposition: '
                                                                    b'attachment; filename="a b.tx'
                                                                    b't"\r\nX-Foo: bar\r\n\r\n',
                          'BODY[HEADER]': b'Content-Type: multipart/digest; boundary=b\r\nContent-'
                                          b'Transfer-Encoding: base64\r\nContent-Disposition: atta'
                                          b'chment; filename="a b.txt"\r\nX-Foo: bar\r\n\r\n',
                          'BODY[TEXT]': b' folded\r\nReply-To: <>\r\n--c\r\nFrom: "q\\"x" <a@b>\r\n'
                                        b'--b\r\nCc: ,,a@b,,\r\nContent-Type: multipart/mixed; bou'
                                        b'ndary=c\r\n\r\n--bx\r\nFrom: a@b, (c) <d@e>\r\ntext line'
                                        b'\r\nContent-Type: text/html\r\nFrom: a@b, (c) <d@e>\r'
                                        b'\nContent-Type: MESSAGE/RFC822\r\nReply-To: <>\r\n--b'
                                        b'\r\n--b\r\nFrom: Dr. X <x@y> (com)\r\ntext line\r\n',
                          'BODY[]': b'Content-Type: multipart/digest; boundary=b\r\nContent-Tran'
                                    b'sfer-Encoding: base64\r\nContent-Disposition: attachment; '
                                    b'filename="a b.txt"\r\nX-Foo: bar\r\n\r\n folded\r\nReply-To:'
                                    b' <>\r\n--c\r\nFrom: "q\\"x" <a@b>\r\n--b\r\nCc: ,,a@b,,\r\n'
                                    b'Content-Type: multipart/mixed; boundary=c\r\n\r\n--bx\r\nF'
                                    b'rom: a@b, (c) <d@e>\r\ntext line\r\nContent-Type: text/html\r'
                                    b'\nFrom: a@b, (c) <d@e>\r\nContent-Type: MESSAGE/RFC822\r\nRep'
                                    b'ly-To: <>\r\n--b\r\n--b\r\nFrom: Dr. X <x@y> (com)\r\ntext l'
                                    b'ine\r\n',
                          'ENVELOPE': b'(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)',
                          'echo ': b'BODY[]',
                          'echo 1': b'BODY[1]',
                          'echo 1.1': b'BODY[1.1]',
                          'echo 1.1.1': b'BODY[1.1.1]',
                          'echo 1.1.MIME': b'BODY[1.1.MIME]',
                          'echo 1.2': b'BODY[1.2]',
                          'echo 1.HEADER': b'BODY[1.HEADER]',
                          'echo 1.MIME': b'BODY[1.MIME]',
                          'echo 2': b'BODY[2]',
                          'echo 2.1': b'BODY[2.1]',
                          'echo 2.1.1': b'BODY[2.1.1]',
                          'echo 2.1.MIME': b'BODY[2.1.MIME]',
                          'echo 2.2': b'BODY[2.2]',
                          'echo 2.HEADER': b'BODY[2.HEADER]',
                          'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                          'echo 2.MIME': b'BODY[2.MIME]',
                          'echo 2.TEXT': b'BODY[2.TEXT]',
                          'echo 3': b'BODY[3]',
                          'echo HEADER': b'BODY[HEADER]',
                          'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                          'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                          'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJ'
                                                                   b'ECT FROM)]',
                          'echo TEXT': b'BODY[TEXT]'},
 'fuzz_eof_boundary': {'BODY': b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "di'
                               b'gest")("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 0 0)('
                               b'"text" "plain" ("charset" "latin1") NIL {3}\r\nd\xc3\xa9 "7bit" '
                               b'0 0) "mixed")',
                       'BODYSTRUCTURE': b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" '
                                        b'0 0 NIL NIL NIL NIL) "digest" ("boundary" "b") NIL NIL N'
                                        b'IL)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" '
                                        b'0 0 NIL NIL NIL NIL)("text" "plain" ("charset" "latin1")'
                                        b' NIL {3}\r\nd\xc3\xa9 "7bit" 0 0 NIL NIL NIL NIL) "mixed'
                                        b'" ("boundary" "b") ("attachment" ("filename" "a b.txt"))'
                                        b' NIL NIL)',
                       'BODY[1.1.1]': b'',
                       'BODY[1.1.MIME]': b'',
                       'BODY[1.1]': b'',
                       'BODY[1.2]': b'',
                       'BODY[1.HEADER]': b'',
                       'BODY[1.MIME]': b'Content-Type: multipart/digest; boundary=b',
                       'BODY[1]': b'',
                       'BODY[2.1.1]': b'',
                       'BODY[2.1.MIME]': b'Content-Type: text/html\r\nContent-Type: multipart/mix'
                                         b'ed; boundary=c\r\nBcc: "A, B" <a@b> (c)\r\nFrom: a@b, (c'
                                         b') <d@e>',
                       'BODY[2.1]': b'',
                       'BODY[2.2]': b'',
                       'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                       'BODY[2.HEADER]': b'',
                       'BODY[2.MIME]': b'Content-Type: text/html\r\nContent-Type: multipart/mixed; '
                                       b'boundary=c\r\nBcc: "A, B" <a@b> (c)\r\nFrom: a@b, (c) <d'
                                       b'@e>',
                       'BODY[2.TEXT]': b'',
                       'BODY[2]': b'',
                       'BODY[3]': b'',
                       'BODY[HEADER.FIELDS (FROM TO)]': b'To: g: h@i;\r\n\r\n',
                       'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                       'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Content-Type: multipart/mixed; b'
                                                                 b'oundary=b\r\nDate: Mon, 1 Jan '
                                                                 b'2024 00:00:00 +0000\r\nContent'
                                                                 b'-Disposition: attachment; filena'
                                                                 b'me="a b.txt"\r\nContent-Type: '
                                                                 b'message/rfc822\r\n--b--\r\nTo: g'
                                                                 b': h@i;\r\n\r\n',
                       'BODY[HEADER]': b'Content-Type: multipart/mixed; boundary=b\r\nDate: Mon, 1 '
                                       b'Jan 2024 00:00:00 +0000\r\nContent-Disposition: attachment'
                                       b'; filename="a b.txt"\r\nContent-Type: message/rfc822\r\n'
                                       b'--b--\r\nTo: g: h@i;\r\n\r\n',
                       'BODY[TEXT]': b'\r\n\r\nContent-Type: multipart/mixed; boundary=c\r\n fold'
                                     b'ed\r\n\r\nContent-Disposition: attachment; filename="a b.txt'
                                     b'"\r\nContent-Type: text/plain; charset=latin1\r\nContent-Typ'
                                     b'e: application/octet-stream\r\n--b  \r\nContent-Type: multip'
                                     b'art/digest; boundary=b\r\n--b\r\nContent-Type: text/html'
                                     b'\r\nContent-Type: multipart/mixed; boundary=c\r\nBcc: "A, B"'
                                     b' <a@b> (c)\r\nFrom: a@b, (c) <d@e>\r\n--b  \r\nContent-Typ'
                                     b'e: text/plain; charset=latin1\r\nContent-Description: '
                                     b'd\xc3\xa9',
                       'BODY[]': b'Content-Type: multipart/mixed; boundary=b\r\nDate: Mon, 1 Jan '
                                 b'2024 00:00:00 +0000\r\nContent-Disposition: attachment; filena'
                                 b'me="a b.txt"\r\nContent-Type: message/rfc822\r\n--b--\r\nTo: g'
                                 b': h@i;\r\n\r\n\r\n\r\nContent-Type: multipart/mixed; boundar'
                                 b'y=c\r\n folded\r\n\r\nContent-Disposition: attachment; filenam'
                                 b'e="a b.txt"\r\nContent-Type: text/plain; charset=latin1\r\nConte'
                                 b'nt-Type: application/octet-stream\r\n--b  \r\nContent-Type: mult'
                                 b'ipart/digest; boundary=b\r\n--b\r\nContent-Type: text/html\r\n'
                                 b'Content-Type: multipart/mixed; boundary=c\r\nBcc: "A, B" <a@b>'
                                 b' (c)\r\nFrom: a@b, (c) <d@e>\r\n--b  \r\nContent-Type: text/pl'
                                 b'ain; charset=latin1\r\nContent-Description: d\xc3\xa9',
                       'ENVELOPE': b'("Mon, 1 Jan 2024 00:00:00 +0000" NIL NIL NIL NIL ((NIL NIL '
                                   b'"g" NIL)(NIL NIL "h" "i")(NIL NIL NIL NIL)) NIL NIL NIL NIL)',
                       'echo ': b'BODY[]',
                       'echo 1': b'BODY[1]',
                       'echo 1.1': b'BODY[1.1]',
                       'echo 1.1.1': b'BODY[1.1.1]',
                       'echo 1.1.MIME': b'BODY[1.1.MIME]',
                       'echo 1.2': b'BODY[1.2]',
                       'echo 1.HEADER': b'BODY[1.HEADER]',
                       'echo 1.MIME': b'BODY[1.MIME]',
                       'echo 2': b'BODY[2]',
                       'echo 2.1': b'BODY[2.1]',
                       'echo 2.1.1': b'BODY[2.1.1]',
                       'echo 2.1.MIME': b'BODY[2.1.MIME]',
                       'echo 2.2': b'BODY[2.2]',
                       'echo 2.HEADER': b'BODY[2.HEADER]',
                       'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                       'echo 2.MIME': b'BODY[2.MIME]',
                       'echo 2.TEXT': b'BODY[2.TEXT]',
                       'echo 3': b'BODY[3]',
                       'echo HEADER': b'BODY[HEADER]',
                       'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                       'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                       'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT '
                                                                b'FROM)]',
                       'echo TEXT': b'BODY[TEXT]'},
 'fuzz_language_fold': {'BODY': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "dig'
                                b'est")',
                        'BODYSTRUCTURE': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0'
                                         b' 0 NIL NIL NIL NIL) "digest" ("boundary" "b") ("attachme'
                                         b'nt" ("filename" "a b.txt")) ("fr") NIL)',
                        'BODY[1.1.1]': b'',
                        'BODY[1.1.MIME]': b'',
                        'BODY[1.1]': b'',
                        'BODY[1.2]': b'',
                        'BODY[1.HEADER]': b'',
                        'BODY[1.MIME]': b'',
                        'BODY[1]': b'',
                        'BODY[2.1.1]': b'',
                        'BODY[2.1.MIME]': b'',
                        'BODY[2.1]': b'',
                        'BODY[2.2]': b'',
                        'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                        'BODY[2.HEADER]': b'',
                        'BODY[2.MIME]': b'',
                        'BODY[2.TEXT]': b'',
                        'BODY[2]': b'',
                        'BODY[3]': b'',
                        'BODY[HEADER.FIELDS (FROM TO)]': b'From: Dr. X <x@y> (com)\r\nFrom: Dr. X'
                                                         b' <x@y> (com)\r\n\r\n',
                        'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                        'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Content-Type: multipart/dige'
                                                                  b'st; boundary=b\r\nContent-Type'
                                                                  b': multipart/digest; boundary'
                                                                  b'=b\r\nCc: ,,a@b,,\r\nContent'
                                                                  b'-Type: application/octet-str'
                                                                  b'eam\r\nContent-Type: text/plai'
                                                                  b'n; name*0=a; name*1=b\r\nConte'
                                                                  b'nt-Language: fr\r\n\tfolded tab'
                                                                  b'\r\nContent-Type: multipart/al'
                                                                  b'ternative; boundary="b"\r\nMes'
                                                                  b'sage-ID: <m@x>\r\nContent-Type'
                                                                  b': MESSAGE/RFC822\r\nContent-Ty'
                                                                  b'pe: text/plain; name*0=a; na'
                                                                  b'me*1=b\r\nContent-Type: multip'
                                                                  b'art/digest; boundary=b\r\nCont'
                                                                  b'ent-Type: text/html\r\nContent'
                                                                  b'-Type: text/plain; name*0=a;'
                                                                  b' name*1=b\r\n--b\r\nContent-'
                                                                  b'Disposition: attachment; fil'
                                                                  b'ename="a b.txt"\r\nDate: Mon, '
                                                                  b'1 Jan 2024 00:00:00 +0000\r\nC'
                                                                  b'ontent-ID: <x@y>\r\n=C3=A9'
                                                                  b'\r\nContent-Type: MESSAGE/RFC8'
                                                                  b'22\r\n--b  \r\nReply-To: <>',
                        'BODY[HEADER]': b'Content-Type: multipart/digest; boundary=b\r\nContent-'
                                        b'Type: multipart/digest; boundary=b\r\nCc: ,,a@b,,\r\nCon'
                                        b'tent-Type: application/octet-stream\r\nContent-Type: t'
                                        b'ext/plain; name*0=a; name*1=b\r\nContent-Language: fr\r'
                                        b'\n\tfolded tab\r\nContent-Type: multipart/alternative; b'
                                        b'oundary="b"\r\nMessage-ID: <m@x>\r\nContent-Type: MESSAG'
                                        b'E/RFC822\r\nContent-Type: text/plain; name*0=a; name*1'
                                        b'=b\r\nContent-Type: multipart/digest; boundary=b\r\nCont'
                                        b'ent-Type: text/html\r\nContent-Type: text/plain; name*'
                                        b'0=a; name*1=b\r\n--b\r\nContent-Disposition: attachment;'
                                        b' filename="a b.txt"\r\nFrom: Dr. X <x@y> (com)\r\nDate: '
                                        b'Mon, 1 Jan 2024 00:00:00 +0000\r\nContent-ID: <x@y>\r\n='
                                        b'C3=A9\r\nContent-Type: MESSAGE/RFC822\r\nFrom: Dr. X <x@'
                                        b'y> (com)\r\n--b  \r\nReply-To: <>',
                        'BODY[TEXT]': b'',
                        'BODY[]': b'Content-Type: multipart/digest; boundary=b\r\nContent-Type: mu'
                                  b'ltipart/digest; boundary=b\r\nCc: ,,a@b,,\r\nContent-Type: a'
                                  b'pplication/octet-stream\r\nContent-Type: text/plain; name*0=a;'
                                  b' name*1=b\r\nContent-Language: fr\r\n\tfolded tab\r\nContent-Ty'
                                  b'pe: multipart/alternative; boundary="b"\r\nMessage-ID: <m@'
                                  b'x>\r\nContent-Type: MESSAGE/RFC822\r\nContent-Type: text/pla'
                                  b'in; name*0=a; name*1=b\r\nContent-Type: multipart/digest; boun'
                                  b'dary=b\r\nContent-Type: text/html\r\nContent-Type: text/plai'
                                  b'n; name*0=a; name*1=b\r\n--b\r\nContent-Disposition: attachm'
                                  b'ent; filename="a b.txt"\r\nFrom: Dr. X <x@y> (com)\r\nDate: '
                                  b'Mon, 1 Jan 2024 00:00:00 +0000\r\nContent-ID: <x@y>\r\n=C3=A'
                                  b'9\r\nContent-Type: MESSAGE/RFC822\r\nFrom: Dr. X <x@y> (com)'
                                  b'\r\n--b  \r\nReply-To: <>',
                        'ENVELOPE': b'("Mon, 1 Jan 2024 00:00:00 +0000" NIL (("Dr. X" NIL "x" "y")'
                                    b'("Dr. X" NIL "x" "y")) (("Dr. X" NIL "x" "y")("Dr. X" NIL "x'
                                    b'" "y")) ((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) NIL ('
                                    b'(NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "MISSIN'
                                    b'G_MAILBOX" "MISSING_DOMAIN")(NIL NIL "a" "b")(NIL NIL "MISSI'
                                    b'NG_MAILBOX" "MISSING_DOMAIN")) NIL NIL "<m@x>")',
                        'echo ': b'BODY[]',
                        'echo 1': b'BODY[1]',
                        'echo 1.1': b'BODY[1.1]',
                        'echo 1.1.1': b'BODY[1.1.1]',
                        'echo 1.1.MIME': b'BODY[1.1.MIME]',
                        'echo 1.2': b'BODY[1.2]',
                        'echo 1.HEADER': b'BODY[1.HEADER]',
                        'echo 1.MIME': b'BODY[1.MIME]',
                        'echo 2': b'BODY[2]',
                        'echo 2.1': b'BODY[2.1]',
                        'echo 2.1.1': b'BODY[2.1.1]',
                        'echo 2.1.MIME': b'BODY[2.1.MIME]',
                        'echo 2.2': b'BODY[2.2]',
                        'echo 2.HEADER': b'BODY[2.HEADER]',
                        'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                        'echo 2.MIME': b'BODY[2.MIME]',
                        'echo 2.TEXT': b'BODY[2.TEXT]',
                        'echo 3': b'BODY[3]',
                        'echo HEADER': b'BODY[HEADER]',
                        'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                        'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                        'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT '
                                                                 b'FROM)]',
                        'echo TEXT': b'BODY[TEXT]'},
 'fuzz_name_only': {'BODY': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)',
                    'BODYSTRUCTURE': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NI'
                                     b'L NIL NIL NIL)',
                    'BODY[1.1.1]': b'',
                    'BODY[1.1.MIME]': b'',
                    'BODY[1.1]': b'',
                    'BODY[1.2]': b'',
                    'BODY[1.HEADER]': b'',
                    'BODY[1.MIME]': b'Subject: s\r\nFrom: "q\\"x" <a@b>\r\nSender: x\r\n folded\r\n'
                                    b'Content-Language: fr\r\nTo: g: h@i;\r\nDate: Mon, 1 Jan 2024'
                                    b' 00:00:00 +0000\r\n=C3=A9\r\nReply-To: <>\r\nContent-Trans'
                                    b'fer-Encoding: base64',
                    'BODY[1]': b'',
                    'BODY[2.1.1]': b'',
                    'BODY[2.1.MIME]': b'',
                    'BODY[2.1]': b'',
                    'BODY[2.2]': b'',
                    'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                    'BODY[2.HEADER]': b'',
                    'BODY[2.MIME]': b'',
                    'BODY[2.TEXT]': b'',
                    'BODY[2]': b'',
                    'BODY[3]': b'',
                    'BODY[HEADER.FIELDS (FROM TO)]': b'From: "q\\"x" <a@b>\r\nTo: g: h@i;\r\n\r\n',
                    'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                    'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Sender: x\r\n folded\r\nContent-'
                                                              b'Language: fr\r\nTo: g: h@i;\r\nD'
                                                              b'ate: Mon, 1 Jan 2024 00:00:00 +0'
                                                              b'000\r\n=C3=A9\r\nReply-To: <>\r\nC'
                                                              b'ontent-Transfer-Encoding: base64',
                    'BODY[HEADER]': b'Subject: s\r\nFrom: "q\\"x" <a@b>\r\nSender: x\r\n folded\r\n'
                                    b'Content-Language: fr\r\nTo: g: h@i;\r\nDate: Mon, 1 Jan 2024'
                                    b' 00:00:00 +0000\r\n=C3=A9\r\nReply-To: <>\r\nContent-Trans'
                                    b'fer-Encoding: base64',
                    'BODY[TEXT]': b'',
                    'BODY[]': b'Subject: s\r\nFrom: "q\\"x" <a@b>\r\nSender: x\r\n folded\r\nCont'
                              b'ent-Language: fr\r\nTo: g: h@i;\r\nDate: Mon, 1 Jan 2024 00:00:0'
                              b'0 +0000\r\n=C3=A9\r\nReply-To: <>\r\nContent-Transfer-Encoding: ba'
                              b'se64',
                    'ENVELOPE': b'("Mon, 1 Jan 2024 00:00:00 +0000" "s" (({3}\r\nq"x NIL "a" "b"'
                                b')) (("x folded" NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) ((NIL N'
                                b'IL "MISSING_MAILBOX" "MISSING_DOMAIN")) ((NIL NIL "g" NIL)(NIL N'
                                b'IL "h" "i")(NIL NIL NIL NIL)) NIL NIL NIL NIL)',
                    'echo ': b'BODY[]',
                    'echo 1': b'BODY[1]',
                    'echo 1.1': b'BODY[1.1]',
                    'echo 1.1.1': b'BODY[1.1.1]',
                    'echo 1.1.MIME': b'BODY[1.1.MIME]',
                    'echo 1.2': b'BODY[1.2]',
                    'echo 1.HEADER': b'BODY[1.HEADER]',
                    'echo 1.MIME': b'BODY[1.MIME]',
                    'echo 2': b'BODY[2]',
                    'echo 2.1': b'BODY[2.1]',
                    'echo 2.1.1': b'BODY[2.1.1]',
                    'echo 2.1.MIME': b'BODY[2.1.MIME]',
                    'echo 2.2': b'BODY[2.2]',
                    'echo 2.HEADER': b'BODY[2.HEADER]',
                    'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                    'echo 2.MIME': b'BODY[2.MIME]',
                    'echo 2.TEXT': b'BODY[2.TEXT]',
                    'echo 3': b'BODY[3]',
                    'echo HEADER': b'BODY[HEADER]',
                    'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                    'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                    'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM'
                                                             b')]',
                    'echo TEXT': b'BODY[TEXT]'},
 'fuzz_repeated_fields': {'BODY': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) '
                                  b'"digest")',
                          'BODYSTRUCTURE': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bi'
                                           b't" 0 0 NIL NIL NIL NIL) "digest" ("boundary" "b") ("'
                                           b'attachment" ("filename" "a b.txt")) ("fr") NIL)',
                          'BODY[1.1.1]': b'',
                          'BODY[1.1.MIME]': b'',
                          'BODY[1.1]': b'',
                          'BODY[1.2]': b'',
                          'BODY[1.HEADER]': b'',
                          'BODY[1.MIME]': b'',
                          'BODY[1]': b'',
                          'BODY[2.1.1]': b'',
                          'BODY[2.1.MIME]': b'',
                          'BODY[2.1]': b'',
                          'BODY[2.2]': b'',
                          'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                          'BODY[2.HEADER]': b'',
                          'BODY[2.MIME]': b'',
                          'BODY[2.TEXT]': b'',
                          'BODY[2]': b'',
                          'BODY[3]': b'',
                          'BODY[HEADER.FIELDS (FROM TO)]': b'\r\n',
                          'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                          'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Content-Type: multipart/dige'
                                                                    b'st; boundary=b\r\n--b\r\nCon'
                                                                    b'tent-Disposition: attachment'
                                                                    b'; filename="a b.txt"\r\nCo'
                                                                    b'ntent-Transfer-Encoding: bas'
                                                                    b'e64\r\nDate: Mon, 1 Jan 20'
                                                                    b'24 00:00:00 +0000\r\n--b--'
                                                                    b'\r\nContent-Type: text/pla'
                                                                    b'in; name*0=a; name*1=b\r\n'
                                                                    b'Message-ID: <m@x>\r\nReply'
                                                                    b'-To: <>\r\nContent-Type: t'
                                                                    b'ext/plain; charset=latin'
                                                                    b'1\r\nCc: ,,a@b,,\r\n folded\r'
                                                                    b'\n--b--\r\nContent-Language'
                                                                    b': fr\r\nContent-Type: ;\r\n',
                          'BODY[HEADER]': b'Content-Type: multipart/digest; boundary=b\r\n--b\r'
                                          b'\nContent-Disposition: attachment; filename="a b.txt"'
                                          b'\r\nContent-Transfer-Encoding: base64\r\nDate: Mon, '
                                          b'1 Jan 2024 00:00:00 +0000\r\n--b--\r\nContent-Type: '
                                          b'text/plain; name*0=a; name*1=b\r\nSubject: =?utf-8?q?x'
                                          b'?= y\r\nMessage-ID: <m@x>\r\nReply-To: <>\r\nSubject: '
                                          b'caf\xc3\xa9\r\nSubject: =?utf-8?q?x?= y\r\nContent-Typ'
                                          b'e: text/plain; charset=latin1\r\nSubject: =?utf-8?q?x?'
                                          b'= y\r\nSubject: =?utf-8?q?x?= y\r\nCc: ,,a@b,,\r\n fol'
                                          b'ded\r\n--b--\r\nContent-Language: fr\r\nSubject: c'
                                          b'af\xc3\xa9\r\nContent-Type: ;\r\n',
                          'BODY[TEXT]': b'',
                          'BODY[]': b'Content-Type: multipart/digest; boundary=b\r\n--b\r\nContent'
                                    b'-Disposition: attachment; filename="a b.txt"\r\nContent-Tr'
                                    b'ansfer-Encoding: base64\r\nDate: Mon, 1 Jan 2024 00:00:00 '
                                    b'+0000\r\n--b--\r\nContent-Type: text/plain; name*0=a; name*1'
                                    b'=b\r\nSubject: =?utf-8?q?x?= y\r\nMessage-ID: <m@x>\r\nRep'
                                    b'ly-To: <>\r\nSubject: caf\xc3\xa9\r\nSubject: =?utf-8?q?x?'
                                    b'= y\r\nContent-Type: text/plain; charset=latin1\r\nSubject: '
                                    b'=?utf-8?q?x?= y\r\nSubject: =?utf-8?q?x?= y\r\nCc: ,,a@b'
                                    b',,\r\n folded\r\n--b--\r\nContent-Language: fr\r\nSubject: c'
                                    b'af\xc3\xa9\r\nContent-Type: ;\r\n',
                          'ENVELOPE': b'("Mon, 1 Jan 2024 00:00:00 +0000" {5}\r\ncaf\xc3\xa9 NIL'
                                      b' NIL ((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")) NIL '
                                      b'((NIL NIL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "M'
                                      b'ISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "a" "b")(NIL N'
                                      b'IL "MISSING_MAILBOX" "MISSING_DOMAIN")(NIL NIL "folded" '
                                      b'"MISSING_DOMAIN")) NIL NIL "<m@x>")',
                          'echo ': b'BODY[]',
                          'echo 1': b'BODY[1]',
                          'echo 1.1': b'BODY[1.1]',
                          'echo 1.1.1': b'BODY[1.1.1]',
                          'echo 1.1.MIME': b'BODY[1.1.MIME]',
                          'echo 1.2': b'BODY[1.2]',
                          'echo 1.HEADER': b'BODY[1.HEADER]',
                          'echo 1.MIME': b'BODY[1.MIME]',
                          'echo 2': b'BODY[2]',
                          'echo 2.1': b'BODY[2.1]',
                          'echo 2.1.1': b'BODY[2.1.1]',
                          'echo 2.1.MIME': b'BODY[2.1.MIME]',
                          'echo 2.2': b'BODY[2.2]',
                          'echo 2.HEADER': b'BODY[2.HEADER]',
                          'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                          'echo 2.MIME': b'BODY[2.MIME]',
                          'echo 2.TEXT': b'BODY[2.TEXT]',
                          'echo 3': b'BODY[3]',
                          'echo HEADER': b'BODY[HEADER]',
                          'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                          'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                          'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJ'
                                                                   b'ECT FROM)]',
                          'echo TEXT': b'BODY[TEXT]'},
 'groups': {'BODY': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1)',
            'BODYSTRUCTURE': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 6 1 NIL NIL NI'
                             b'L NIL)',
            'BODY[1.1.1]': b'',
            'BODY[1.1.MIME]': b'',
            'BODY[1.1]': b'',
            'BODY[1.2]': b'',
            'BODY[1.HEADER]': b'',
            'BODY[1.MIME]': b'Date: Sat, 28 Nov 2026 12:00:00 +0100\r\nFrom: alice@a.example\r\nTo'
                            b': Equipe soins: bob@b.example, Carol <carol@c.example>;, eve@e.examp'
                            b'le\r\nCc: undisclosed-recipients:;\r\nBcc: secret@s.example\r\nSub'
                            b'ject: groups\r\nMessage-ID: <6@a.example>\r\n\r\n',
            'BODY[1]': b'body\r\n',
            'BODY[2.1.1]': b'',
            'BODY[2.1.MIME]': b'',
            'BODY[2.1]': b'',
            'BODY[2.2]': b'',
            'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
            'BODY[2.HEADER]': b'',
            'BODY[2.MIME]': b'',
            'BODY[2.TEXT]': b'',
            'BODY[2]': b'',
            'BODY[3]': b'',
            'BODY[HEADER.FIELDS (FROM TO)]': b'From: alice@a.example\r\nTo: Equipe soins: bob@b.e'
                                             b'xample, Carol <carol@c.example>;, eve@e.example\r'
                                             b'\n\r\n',
            'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
            'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Date: Sat, 28 Nov 2026 12:00:00 +0100\r\nT'
                                                      b'o: Equipe soins: bob@b.example, Carol <c'
                                                      b'arol@c.example>;, eve@e.example\r\nCc: und'
                                                      b'isclosed-recipients:;\r\nBcc: secret@s.exa'
                                                      b'mple\r\nMessage-ID: <6@a.example>\r\n\r\n',
            'BODY[HEADER]': b'Date: Sat, 28 Nov 2026 12:00:00 +0100\r\nFrom: alice@a.example\r\nTo'
                            b': Equipe soins: bob@b.example, Carol <carol@c.example>;, eve@e.examp'
                            b'le\r\nCc: undisclosed-recipients:;\r\nBcc: secret@s.example\r\nSub'
                            b'ject: groups\r\nMessage-ID: <6@a.example>\r\n\r\n',
            'BODY[TEXT]': b'body\r\n',
            'BODY[]': b'Date: Sat, 28 Nov 2026 12:00:00 +0100\r\nFrom: alice@a.example\r\nTo: Eq'
                      b'uipe soins: bob@b.example, Carol <carol@c.example>;, eve@e.example\r\nCc: '
                      b'undisclosed-recipients:;\r\nBcc: secret@s.example\r\nSubject: groups\r\nMe'
                      b'ssage-ID: <6@a.example>\r\n\r\nbody\r\n',
            'ENVELOPE': b'("Sat, 28 Nov 2026 12:00:00 +0100" "groups" ((NIL NIL "alice" "a.example'
                        b'")) ((NIL NIL "alice" "a.example")) ((NIL NIL "alice" "a.example")) ((NI'
                        b'L NIL "Equipe soins" NIL)(NIL NIL "bob" "b.example")("Carol" NIL "carol"'
                        b' "c.example")(NIL NIL NIL NIL)(NIL NIL "eve" "e.example")) ((NIL NIL "un'
                        b'disclosed-recipients" NIL)(NIL NIL NIL NIL)) ((NIL NIL "secret" "s.examp'
                        b'le")) NIL "<6@a.example>")',
            'echo ': b'BODY[]',
            'echo 1': b'BODY[1]',
            'echo 1.1': b'BODY[1.1]',
            'echo 1.1.1': b'BODY[1.1.1]',
            'echo 1.1.MIME': b'BODY[1.1.MIME]',
            'echo 1.2': b'BODY[1.2]',
            'echo 1.HEADER': b'BODY[1.HEADER]',
            'echo 1.MIME': b'BODY[1.MIME]',
            'echo 2': b'BODY[2]',
            'echo 2.1': b'BODY[2.1]',
            'echo 2.1.1': b'BODY[2.1.1]',
            'echo 2.1.MIME': b'BODY[2.1.MIME]',
            'echo 2.2': b'BODY[2.2]',
            'echo 2.HEADER': b'BODY[2.HEADER]',
            'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
            'echo 2.MIME': b'BODY[2.MIME]',
            'echo 2.TEXT': b'BODY[2.TEXT]',
            'echo 3': b'BODY[3]',
            'echo HEADER': b'BODY[HEADER]',
            'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
            'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
            'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
            'echo TEXT': b'BODY[TEXT]'},
 'headers_only': {'BODY': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0)',
                  'BODYSTRUCTURE': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 NI'
                                   b'L NIL NIL NIL)',
                  'BODY[1.1.1]': b'',
                  'BODY[1.1.MIME]': b'',
                  'BODY[1.1]': b'',
                  'BODY[1.2]': b'',
                  'BODY[1.HEADER]': b'',
                  'BODY[1.MIME]': b'From: alice@a.example\r\nSubject: headers only\r\n',
                  'BODY[1]': b'',
                  'BODY[2.1.1]': b'',
                  'BODY[2.1.MIME]': b'',
                  'BODY[2.1]': b'',
                  'BODY[2.2]': b'',
                  'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                  'BODY[2.HEADER]': b'',
                  'BODY[2.MIME]': b'',
                  'BODY[2.TEXT]': b'',
                  'BODY[2]': b'',
                  'BODY[3]': b'',
                  'BODY[HEADER.FIELDS (FROM TO)]': b'From: alice@a.example\r\n\r\n',
                  'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                  'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'',
                  'BODY[HEADER]': b'From: alice@a.example\r\nSubject: headers only\r\n',
                  'BODY[TEXT]': b'',
                  'BODY[]': b'From: alice@a.example\r\nSubject: headers only\r\n',
                  'ENVELOPE': b'(NIL "headers only" ((NIL NIL "alice" "a.example")) ((NIL NIL "a'
                              b'lice" "a.example")) ((NIL NIL "alice" "a.example")) NIL NIL NIL '
                              b'NIL NIL)',
                  'echo ': b'BODY[]',
                  'echo 1': b'BODY[1]',
                  'echo 1.1': b'BODY[1.1]',
                  'echo 1.1.1': b'BODY[1.1.1]',
                  'echo 1.1.MIME': b'BODY[1.1.MIME]',
                  'echo 1.2': b'BODY[1.2]',
                  'echo 1.HEADER': b'BODY[1.HEADER]',
                  'echo 1.MIME': b'BODY[1.MIME]',
                  'echo 2': b'BODY[2]',
                  'echo 2.1': b'BODY[2.1]',
                  'echo 2.1.1': b'BODY[2.1.1]',
                  'echo 2.1.MIME': b'BODY[2.1.MIME]',
                  'echo 2.2': b'BODY[2.2]',
                  'echo 2.HEADER': b'BODY[2.HEADER]',
                  'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                  'echo 2.MIME': b'BODY[2.MIME]',
                  'echo 2.TEXT': b'BODY[2.TEXT]',
                  'echo 3': b'BODY[3]',
                  'echo HEADER': b'BODY[HEADER]',
                  'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                  'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                  'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM'
                                                           b')]',
                  'echo TEXT': b'BODY[TEXT]'},
 'nested': {'BODY': b'((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 23 0)("text'
                    b'" "html" ("charset" "utf-8") NIL NIL "7bit" 32 0) "alternative")("applicatio'
                    b'n" "pdf" ("name" "resultats.pdf") NIL NIL "base64" 110) "mixed")',
            'BODYSTRUCTURE': b'((("text" "plain" ("charset" "utf-8") NIL NIL "quoted-printable" 23 '
                             b'0 NIL NIL NIL NIL)("text" "html" ("charset" "utf-8") NIL NIL "7bit" '
                             b'32 0 NIL NIL NIL NIL) "alternative" ("boundary" "inner") NIL NIL NIL'
                             b')("application" "pdf" ("name" "resultats.pdf") NIL NIL "base64" 110 '
                             b'NIL ("attachment" ("filename*" "utf-8\'\'r%C3%A9sultats.pdf")) NIL'
                             b' NIL) "mixed" ("boundary" "outer") NIL NIL NIL)',
            'BODY[1.1.1]': b'R=C3=A9sultats normaux.',
            'BODY[1.1.MIME]': b'Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encodi'
                              b'ng: quoted-printable\r\n\r\n',
            'BODY[1.1]': b'R=C3=A9sultats normaux.',
            'BODY[1.2]': b'<p>R&eacute;sultats normaux.</p>',
            'BODY[1.HEADER]': b'',
            'BODY[1.MIME]': b'Content-Type: multipart/alternative; boundary=inner\r\n\r\n',
            'BODY[1]': b'--inner\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-E'
                       b'ncoding: quoted-printable\r\n\r\nR=C3=A9sultats normaux.\r\n--inner\r\nC'
                       b'ontent-Type: text/html; charset=utf-8\r\n\r\n<p>R&eacute;sultats normaux'
                       b'.</p>\r\n--inner--\r\n',
            'BODY[2.1.1]': b'',
            'BODY[2.1.MIME]': b'Content-Type: application/pdf; name="resultats.pdf"\r\nContent-Dis'
                              b"position: attachment; filename*=utf-8''r%C3%A9sultats.pdf\r\nConte"
                              b'nt-Transfer-Encoding: base64\r\n\r\n',
            'BODY[2.1]': b'JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\neJ'
                         b'wrVAhUKOQCAAeDAcsKZW5kc3RyZWFtCmVuZG9iago=',
            'BODY[2.2]': b'',
            'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
            'BODY[2.HEADER]': b'',
            'BODY[2.MIME]': b'Content-Type: application/pdf; name="resultats.pdf"\r\nContent-Dis'
                            b"position: attachment; filename*=utf-8''r%C3%A9sultats.pdf\r\nConte"
                            b'nt-Transfer-Encoding: base64\r\n\r\n',
            'BODY[2.TEXT]': b'',
            'BODY[2]': b'JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\neJwrVA'
                       b'hUKOQCAAeDAcsKZW5kc3RyZWFtCmVuZG9iago=',
            'BODY[3]': b'',
            'BODY[HEADER.FIELDS (FROM TO)]': b'From: "Dr. Martin, Alice" <alice@a.example>\r\nTo:'
                                             b' Bob <bob@b.example>, carol@c.example (Carol C.)'
                                             b'\r\n\r\n',
            'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
            'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Date: Tue, 24 Nov 2026 10:11:12 +0000\r\nT'
                                                      b'o: Bob <bob@b.example>, carol@c.example '
                                                      b'(Carol C.)\r\nCc: <dave@d.example>\r\nMe'
                                                      b'ssage-ID: <2@a.example>\r\nMIME-Version: 1'
                                                      b'.0\r\nContent-Type: multipart/mixed; bound'
                                                      b'ary="outer"\r\n\r\n',
            'BODY[HEADER]': b'Date: Tue, 24 Nov 2026 10:11:12 +0000\r\nFrom: "Dr. Martin, Alice"'
                            b' <alice@a.example>\r\nTo: Bob <bob@b.example>, carol@c.example (Ca'
                            b'rol C.)\r\nCc: <dave@d.example>\r\nSubject: Resultats\r\nMessage-I'
                            b'D: <2@a.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mix'
                            b'ed; boundary="outer"\r\n\r\n',
            'BODY[TEXT]': b'This is a MIME preamble.\r\n--outer\r\nContent-Type: multipart/alter'
                          b'native; boundary=inner\r\n\r\n--inner\r\nContent-Type: text/plain; cha'
                          b'rset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nR=C3='
                          b'A9sultats normaux.\r\n--inner\r\nContent-Type: text/html; charset=ut'
                          b'f-8\r\n\r\n<p>R&eacute;sultats normaux.</p>\r\n--inner--\r\n--outer\r'
                          b'\nContent-Type: application/pdf; name="resultats.pdf"\r\nContent-Dispos'
                          b"ition: attachment; filename*=utf-8''r%C3%A9sultats.pdf\r\nContent-Tran"
                          b'sfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5'
                          b'ndGggNiAwIFI+PgpzdHJlYW0K\r\neJwrVAhUKOQCAAeDAcsKZW5kc3RyZWFtCmVuZG9ia'
                          b'go=\r\n--outer--\r\nepilogue text\r\n',
            'BODY[]': b'Date: Tue, 24 Nov 2026 10:11:12 +0000\r\nFrom: "Dr. Martin, Alice" <alice@'
                      b'a.example>\r\nTo: Bob <bob@b.example>, carol@c.example (Carol C.)\r\nCc:'
                      b' <dave@d.example>\r\nSubject: Resultats\r\nMessage-ID: <2@a.example>\r\nMI'
                      b'ME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="outer"\r\n\r\n'
                      b'This is a MIME preamble.\r\n--outer\r\nContent-Type: multipart/alternati'
                      b've; boundary=inner\r\n\r\n--inner\r\nContent-Type: text/plain; charset=utf'
                      b'-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nR=C3=A9sultats no'
                      b'rmaux.\r\n--inner\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>R&'
                      b'eacute;sultats normaux.</p>\r\n--inner--\r\n--outer\r\nContent-Type: appli'
                      b'cation/pdf; name="resultats.pdf"\r\nContent-Disposition: attachment; filen'
                      b"ame*=utf-8''r%C3%A9sultats.pdf\r\nContent-Transfer-Encoding: base64\r\n\r"
                      b'\nJVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFI+PgpzdHJlYW0K\r\neJwrV'
                      b'AhUKOQCAAeDAcsKZW5kc3RyZWFtCmVuZG9iago=\r\n--outer--\r\nepilogue text\r\n',
            'ENVELOPE': b'("Tue, 24 Nov 2026 10:11:12 +0000" "Resultats" (("Dr. Martin, Alice" NIL'
                        b' "alice" "a.example")) (("Dr. Martin, Alice" NIL "alice" "a.example")) ('
                        b'("Dr. Martin, Alice" NIL "alice" "a.example")) (("Bob" NIL "bob" "b.exam'
                        b'ple")("Carol C." NIL "carol" "c.example")) ((NIL NIL "dave" "d.example")'
                        b') NIL NIL "<2@a.example>")',
            'echo ': b'BODY[]',
            'echo 1': b'BODY[1]',
            'echo 1.1': b'BODY[1.1]',
            'echo 1.1.1': b'BODY[1.1.1]',
            'echo 1.1.MIME': b'BODY[1.1.MIME]',
            'echo 1.2': b'BODY[1.2]',
            'echo 1.HEADER': b'BODY[1.HEADER]',
            'echo 1.MIME': b'BODY[1.MIME]',
            'echo 2': b'BODY[2]',
            'echo 2.1': b'BODY[2.1]',
            'echo 2.1.1': b'BODY[2.1.1]',
            'echo 2.1.MIME': b'BODY[2.1.MIME]',
            'echo 2.2': b'BODY[2.2]',
            'echo 2.HEADER': b'BODY[2.HEADER]',
            'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
            'echo 2.MIME': b'BODY[2.MIME]',
            'echo 2.TEXT': b'BODY[2.TEXT]',
            'echo 3': b'BODY[3]',
            'echo HEADER': b'BODY[HEADER]',
            'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
            'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
            'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
            'echo TEXT': b'BODY[TEXT]'},
 'no_boundary': {'BODY': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0) "mixed")',
                 'BODYSTRUCTURE': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 0 0 N'
                                  b'IL NIL NIL NIL) "mixed" NIL NIL NIL NIL)',
                 'BODY[1.1.1]': b'',
                 'BODY[1.1.MIME]': b'',
                 'BODY[1.1]': b'',
                 'BODY[1.2]': b'',
                 'BODY[1.HEADER]': b'',
                 'BODY[1.MIME]': b'',
                 'BODY[1]': b'',
                 'BODY[2.1.1]': b'',
                 'BODY[2.1.MIME]': b'',
                 'BODY[2.1]': b'',
                 'BODY[2.2]': b'',
                 'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                 'BODY[2.HEADER]': b'',
                 'BODY[2.MIME]': b'',
                 'BODY[2.TEXT]': b'',
                 'BODY[2]': b'',
                 'BODY[3]': b'',
                 'BODY[HEADER.FIELDS (FROM TO)]': b'From: alice@a.example\r\n\r\n',
                 'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                 'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'MIME-Version: 1.0\r\nContent-Type: mul'
                                                           b'tipart/mixed\r\n\r\n',
                 'BODY[HEADER]': b'From: alice@a.example\r\nSubject: multipart without boundary\r\n'
                                 b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n',
                 'BODY[TEXT]': b'--x\r\nContent-Type: text/plain\r\n\r\nhello\r\n--x--\r\n',
                 'BODY[]': b'From: alice@a.example\r\nSubject: multipart without boundary\r\nMIME'
                           b'-Version: 1.0\r\nContent-Type: multipart/mixed\r\n\r\n--x\r\nContent'
                           b'-Type: text/plain\r\n\r\nhello\r\n--x--\r\n',
                 'ENVELOPE': b'(NIL "multipart without boundary" ((NIL NIL "alice" "a.example")) (('
                             b'NIL NIL "alice" "a.example")) ((NIL NIL "alice" "a.example")) NIL NI'
                             b'L NIL NIL NIL)',
                 'echo ': b'BODY[]',
                 'echo 1': b'BODY[1]',
                 'echo 1.1': b'BODY[1.1]',
                 'echo 1.1.1': b'BODY[1.1.1]',
                 'echo 1.1.MIME': b'BODY[1.1.MIME]',
                 'echo 1.2': b'BODY[1.2]',
                 'echo 1.HEADER': b'BODY[1.HEADER]',
                 'echo 1.MIME': b'BODY[1.MIME]',
                 'echo 2': b'BODY[2]',
                 'echo 2.1': b'BODY[2.1]',
                 'echo 2.1.1': b'BODY[2.1.1]',
                 'echo 2.1.MIME': b'BODY[2.1.MIME]',
                 'echo 2.2': b'BODY[2.2]',
                 'echo 2.HEADER': b'BODY[2.HEADER]',
                 'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                 'echo 2.MIME': b'BODY[2.MIME]',
                 'echo 2.TEXT': b'BODY[2.TEXT]',
                 'echo 3': b'BODY[3]',
                 'echo HEADER': b'BODY[HEADER]',
                 'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                 'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                 'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
                 'echo TEXT': b'BODY[TEXT]'},
 'no_date': {'BODY': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0)',
             'BODYSTRUCTURE': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NIL NI'
                              b'L NIL NIL)',
             'BODY[1.1.1]': b'',
             'BODY[1.1.MIME]': b'',
             'BODY[1.1]': b'',
             'BODY[1.2]': b'',
             'BODY[1.HEADER]': b'',
             'BODY[1.MIME]': b'From: nobody\r\nTo: <@route.example:bob@b.example>\r\nSender: sec@a.'
                             b'example\r\nReply-To: replies@a.example\r\nSubject: no date, no i'
                             b'd\r\n\r\n',
             'BODY[1]': b'x',
             'BODY[2.1.1]': b'',
             'BODY[2.1.MIME]': b'',
             'BODY[2.1]': b'',
             'BODY[2.2]': b'',
             'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
             'BODY[2.HEADER]': b'',
             'BODY[2.MIME]': b'',
             'BODY[2.TEXT]': b'',
             'BODY[2]': b'',
             'BODY[3]': b'',
             'BODY[HEADER.FIELDS (FROM TO)]': b'From: nobody\r\nTo: <@route.example:bob@b.example>'
                                              b'\r\n\r\n',
             'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
             'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'To: <@route.example:bob@b.example>\r\nSend'
                                                       b'er: sec@a.example\r\nReply-To: replies@a.e'
                                                       b'xample\r\n\r\n',
             'BODY[HEADER]': b'From: nobody\r\nTo: <@route.example:bob@b.example>\r\nSender: sec@a.'
                             b'example\r\nReply-To: replies@a.example\r\nSubject: no date, no i'
                             b'd\r\n\r\n',
             'BODY[TEXT]': b'x',
             'BODY[]': b'From: nobody\r\nTo: <@route.example:bob@b.example>\r\nSender: sec@a.exam'
                       b'ple\r\nReply-To: replies@a.example\r\nSubject: no date, no id\r\n\r\nx',
             'ENVELOPE': b'(NIL "no date, no id" ((NIL NIL "nobody" "MISSING_DOMAIN")) ((NIL NIL "s'
                         b'ec" "a.example")) ((NIL NIL "replies" "a.example")) ((NIL "@route.exampl'
                         b'e" "bob" "b.example")) NIL NIL NIL NIL)',
             'echo ': b'BODY[]',
             'echo 1': b'BODY[1]',
             'echo 1.1': b'BODY[1.1]',
             'echo 1.1.1': b'BODY[1.1.1]',
             'echo 1.1.MIME': b'BODY[1.1.MIME]',
             'echo 1.2': b'BODY[1.2]',
             'echo 1.HEADER': b'BODY[1.HEADER]',
             'echo 1.MIME': b'BODY[1.MIME]',
             'echo 2': b'BODY[2]',
             'echo 2.1': b'BODY[2.1]',
             'echo 2.1.1': b'BODY[2.1.1]',
             'echo 2.1.MIME': b'BODY[2.1.MIME]',
             'echo 2.2': b'BODY[2.2]',
             'echo 2.HEADER': b'BODY[2.HEADER]',
             'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
             'echo 2.MIME': b'BODY[2.MIME]',
             'echo 2.TEXT': b'BODY[2.TEXT]',
             'echo 3': b'BODY[3]',
             'echo HEADER': b'BODY[HEADER]',
             'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
             'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
             'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
             'echo TEXT': b'BODY[TEXT]'},
 'no_end': {'BODY': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0)("text" "plain" ('
                    b'"charset" "us-ascii") NIL NIL "7bit" 22 1) "mixed")',
            'BODYSTRUCTURE': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 5 0 NIL NIL N'
                             b'IL NIL)("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 22 1 NI'
                             b'L NIL NIL NIL) "mixed" ("boundary" "nope") NIL NIL NIL)',
            'BODY[1.1.1]': b'',
            'BODY[1.1.MIME]': b'Content-Type: text/plain\r\n\r\n',
            'BODY[1.1]': b'first',
            'BODY[1.2]': b'',
            'BODY[1.HEADER]': b'',
            'BODY[1.MIME]': b'Content-Type: text/plain\r\n\r\n',
            'BODY[1]': b'first',
            'BODY[2.1.1]': b'',
            'BODY[2.1.MIME]': b'Content-Type: text/plain\r\n\r\n',
            'BODY[2.1]': b'second, never closed\r\n',
            'BODY[2.2]': b'',
            'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
            'BODY[2.HEADER]': b'',
            'BODY[2.MIME]': b'Content-Type: text/plain\r\n\r\n',
            'BODY[2.TEXT]': b'',
            'BODY[2]': b'second, never closed\r\n',
            'BODY[3]': b'',
            'BODY[HEADER.FIELDS (FROM TO)]': b'From: alice@a.example\r\n\r\n',
            'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
            'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'MIME-Version: 1.0\r\nContent-Type: multipa'
                                                      b'rt/mixed; boundary="nope"\r\n\r\n',
            'BODY[HEADER]': b'From: alice@a.example\r\nSubject: no closing boundary\r\nMIME-Versio'
                            b'n: 1.0\r\nContent-Type: multipart/mixed; boundary="nope"\r\n\r\n',
            'BODY[TEXT]': b'--nope\r\nContent-Type: text/plain\r\n\r\nfirst\r\n--nope\r\nContent-T'
                          b'ype: text/plain\r\n\r\nsecond, never closed\r\n',
            'BODY[]': b'From: alice@a.example\r\nSubject: no closing boundary\r\nMIME-Version: 1'
                      b'.0\r\nContent-Type: multipart/mixed; boundary="nope"\r\n\r\n--nope\r\nCo'
                      b'ntent-Type: text/plain\r\n\r\nfirst\r\n--nope\r\nContent-Type: text/plai'
                      b'n\r\n\r\nsecond, never closed\r\n',
            'ENVELOPE': b'(NIL "no closing boundary" ((NIL NIL "alice" "a.example")) ((NIL NIL "al'
                        b'ice" "a.example")) ((NIL NIL "alice" "a.example")) NIL NIL NIL NIL NIL)',
            'echo ': b'BODY[]',
            'echo 1': b'BODY[1]',
            'echo 1.1': b'BODY[1.1]',
            'echo 1.1.1': b'BODY[1.1.1]',
            'echo 1.1.MIME': b'BODY[1.1.MIME]',
            'echo 1.2': b'BODY[1.2]',
            'echo 1.HEADER': b'BODY[1.HEADER]',
            'echo 1.MIME': b'BODY[1.MIME]',
            'echo 2': b'BODY[2]',
            'echo 2.1': b'BODY[2.1]',
            'echo 2.1.1': b'BODY[2.1.1]',
            'echo 2.1.MIME': b'BODY[2.1.MIME]',
            'echo 2.2': b'BODY[2.2]',
            'echo 2.HEADER': b'BODY[2.HEADER]',
            'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
            'echo 2.MIME': b'BODY[2.MIME]',
            'echo 2.TEXT': b'BODY[2.TEXT]',
            'echo 3': b'BODY[3]',
            'echo HEADER': b'BODY[HEADER]',
            'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
            'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
            'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
            'echo TEXT': b'BODY[TEXT]'},
 'params': {'BODY': b'("TEXT" "HTML" ("CHARSET" "UTF-8" "Format" "Flowed") "<part1@a.example>" "th'
                    b'e report" "QUOTED-PRINTABLE" 25 1)',
            'BODYSTRUCTURE': b'("TEXT" "HTML" ("CHARSET" "UTF-8" "Format" "Flowed") "<part1@a.examp'
                             b'le>" "the report" "QUOTED-PRINTABLE" 25 1 "Q2hlY2sgSW50ZWdyaXR5IQ=="'
                             b' ("inline" ("filename" "r.html" "size" "120")) ("fr" "en-GB") "http:'
                             b'//a.example/r.html")',
            'BODY[1.1.1]': b'',
            'BODY[1.1.MIME]': b'',
            'BODY[1.1]': b'',
            'BODY[1.2]': b'',
            'BODY[1.HEADER]': b'',
            'BODY[1.MIME]': b'From: alice@a.example\r\nSubject: params\r\nMIME-Version: 1.0\r\nC'
                            b'ontent-Type: TEXT/HTML; CHARSET="UTF-8"; Format=Flowed\r\nContent-'
                            b'ID: <part1@a.example>\r\nContent-Description: the report\r\nContent-'
                            b'Transfer-Encoding: QUOTED-PRINTABLE\r\nContent-MD5: Q2hlY2sgSW50ZW'
                            b'dyaXR5IQ==\r\nContent-Disposition: inline; filename="r.html"; size'
                            b'=120\r\nContent-Language: fr, en-GB\r\nContent-Location: http://a.ex'
                            b'ample/r.html\r\n\r\n',
            'BODY[1]': b'<p>r=C3=A9sum=C3=A9</p>\r\n',
            'BODY[2.1.1]': b'',
            'BODY[2.1.MIME]': b'',
            'BODY[2.1]': b'',
            'BODY[2.2]': b'',
            'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
            'BODY[2.HEADER]': b'',
            'BODY[2.MIME]': b'',
            'BODY[2.TEXT]': b'',
            'BODY[2]': b'',
            'BODY[3]': b'',
            'BODY[HEADER.FIELDS (FROM TO)]': b'From: alice@a.example\r\n\r\n',
            'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
            'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'MIME-Version: 1.0\r\nContent-Type: TEXT/HT'
                                                      b'ML; CHARSET="UTF-8"; Format=Flowed\r\nCont'
                                                      b'ent-ID: <part1@a.example>\r\nContent-Descr'
                                                      b'iption: the report\r\nContent-Transfer-Enc'
                                                      b'oding: QUOTED-PRINTABLE\r\nContent-MD5: Q2'
                                                      b'hlY2sgSW50ZWdyaXR5IQ==\r\nContent-Disposit'
                                                      b'ion: inline; filename="r.html"; size=120'
                                                      b'\r\nContent-Language: fr, en-GB\r\nConte'
                                                      b'nt-Location: http://a.example/r.html'
                                                      b'\r\n\r\n',
            'BODY[HEADER]': b'From: alice@a.example\r\nSubject: params\r\nMIME-Version: 1.0\r\nC'
                            b'ontent-Type: TEXT/HTML; CHARSET="UTF-8"; Format=Flowed\r\nContent-'
                            b'ID: <part1@a.example>\r\nContent-Description: the report\r\nContent-'
                            b'Transfer-Encoding: QUOTED-PRINTABLE\r\nContent-MD5: Q2hlY2sgSW50ZW'
                            b'dyaXR5IQ==\r\nContent-Disposition: inline; filename="r.html"; size'
                            b'=120\r\nContent-Language: fr, en-GB\r\nContent-Location: http://a.ex'
                            b'ample/r.html\r\n\r\n',
            'BODY[TEXT]': b'<p>r=C3=A9sum=C3=A9</p>\r\n',
            'BODY[]': b'From: alice@a.example\r\nSubject: params\r\nMIME-Version: 1.0\r\nContent-T'
                      b'ype: TEXT/HTML; CHARSET="UTF-8"; Format=Flowed\r\nContent-ID: <part1@a.exa'
                      b'mple>\r\nContent-Description: the report\r\nContent-Transfer-Encoding: Q'
                      b'UOTED-PRINTABLE\r\nContent-MD5: Q2hlY2sgSW50ZWdyaXR5IQ==\r\nContent-Disp'
                      b'osition: inline; filename="r.html"; size=120\r\nContent-Language: fr, en-G'
                      b'B\r\nContent-Location: http://a.example/r.html\r\n\r\n<p>r=C3=A9sum=C3=A9<'
                      b'/p>\r\n',
            'ENVELOPE': b'(NIL "params" ((NIL NIL "alice" "a.example")) ((NIL NIL "alice" "a.examp'
                        b'le")) ((NIL NIL "alice" "a.example")) NIL NIL NIL NIL NIL)',
            'echo ': b'BODY[]',
            'echo 1': b'BODY[1]',
            'echo 1.1': b'BODY[1.1]',
            'echo 1.1.1': b'BODY[1.1.1]',
            'echo 1.1.MIME': b'BODY[1.1.MIME]',
            'echo 1.2': b'BODY[1.2]',
            'echo 1.HEADER': b'BODY[1.HEADER]',
            'echo 1.MIME': b'BODY[1.MIME]',
            'echo 2': b'BODY[2]',
            'echo 2.1': b'BODY[2.1]',
            'echo 2.1.1': b'BODY[2.1.1]',
            'echo 2.1.MIME': b'BODY[2.1.MIME]',
            'echo 2.2': b'BODY[2.2]',
            'echo 2.HEADER': b'BODY[2.HEADER]',
            'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
            'echo 2.MIME': b'BODY[2.MIME]',
            'echo 2.TEXT': b'BODY[2.TEXT]',
            'echo 3': b'BODY[3]',
            'echo HEADER': b'BODY[HEADER]',
            'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
            'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
            'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
            'echo TEXT': b'BODY[TEXT]'},
 'raw_utf8': {'BODY': b'("text" "plain" ("charset" "utf-8") NIL NIL "8bit" 53 1)',
              'BODYSTRUCTURE': b'("text" "plain" ("charset" "utf-8") NIL NIL "8bit" 53 1 NIL NIL '
                               b'NIL NIL)',
              'BODY[1.1.1]': b'',
              'BODY[1.1.MIME]': b'',
              'BODY[1.1]': b'',
              'BODY[1.2]': b'',
              'BODY[1.HEADER]': b'',
              'BODY[1.MIME]': b'Date: Fri, 27 Nov 2026 12:00:00 +0100\r\nFrom: Zo\xc3\xa9 Le'
                              b'f\xc3\xa8vre <zoe@a.example>\r\nTo: "J\xc3\xa9r\xc3\xb4me \\"'
                              b'J\xc3\xa9\\" No\xc3\xabl" <jerome@b.example>\r\nSubject: R\xc3'
                              b'\xa9union du comit\xc3\xa9 "sant\xc3\xa9"\r\nMessage-ID: <5@a.exa'
                              b'mple>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Tran'
                              b'sfer-Encoding: 8bit\r\n\r\n',
              'BODY[1]': b'Ordre du jour : coordination des soins \xc3\xa0 domicile.\r\n',
              'BODY[2.1.1]': b'',
              'BODY[2.1.MIME]': b'',
              'BODY[2.1]': b'',
              'BODY[2.2]': b'',
              'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
              'BODY[2.HEADER]': b'',
              'BODY[2.MIME]': b'',
              'BODY[2.TEXT]': b'',
              'BODY[2]': b'',
              'BODY[3]': b'',
              'BODY[HEADER.FIELDS (FROM TO)]': b'From: Zo\xc3\xa9 Lef\xc3\xa8vre <zoe@a.example>\r'
                                               b'\nTo: "J\xc3\xa9r\xc3\xb4me \\"J\xc3\xa9\\" N'
                                               b'o\xc3\xabl" <jerome@b.example>\r\n\r\n',
              'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
              'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Date: Fri, 27 Nov 2026 12:00:00 +010'
                                                        b'0\r\nTo: "J\xc3\xa9r\xc3\xb4me \\"J'
                                                        b'\xc3\xa9\\" No\xc3\xabl" <jerome@b.exampl'
                                                        b'e>\r\nMessage-ID: <5@a.example>\r\nConte'
                                                        b'nt-Type: text/plain; charset=utf-8\r\n'
                                                        b'Content-Transfer-Encoding: 8bit\r\n\r\n',
              'BODY[HEADER]': b'Date: Fri, 27 Nov 2026 12:00:00 +0100\r\nFrom: Zo\xc3\xa9 Le'
                              b'f\xc3\xa8vre <zoe@a.example>\r\nTo: "J\xc3\xa9r\xc3\xb4me \\"'
                              b'J\xc3\xa9\\" No\xc3\xabl" <jerome@b.example>\r\nSubject: R\xc3'
                              b'\xa9union du comit\xc3\xa9 "sant\xc3\xa9"\r\nMessage-ID: <5@a.exa'
                              b'mple>\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Tran'
                              b'sfer-Encoding: 8bit\r\n\r\n',
              'BODY[TEXT]': b'Ordre du jour : coordination des soins \xc3\xa0 domicile.\r\n',
              'BODY[]': b'Date: Fri, 27 Nov 2026 12:00:00 +0100\r\nFrom: Zo\xc3\xa9 Lef\xc3\xa8v'
                        b're <zoe@a.example>\r\nTo: "J\xc3\xa9r\xc3\xb4me \\"J\xc3\xa9\\" No'
                        b'\xc3\xabl" <jerome@b.example>\r\nSubject: R\xc3\xa9union du comit\xc3'
                        b'\xa9 "sant\xc3\xa9"\r\nMessage-ID: <5@a.example>\r\nContent-Type: text/pl'
                        b'ain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nOrdre du '
                        b'jour : coordination des soins \xc3\xa0 domicile.\r\n',
              'ENVELOPE': b'("Fri, 27 Nov 2026 12:00:00 +0100" {28}\r\nR\xc3\xa9union du com'
                          b'it\xc3\xa9 "sant\xc3\xa9" (({13}\r\nZo\xc3\xa9 Lef\xc3\xa8vre NIL "zoe'
                          b'" "a.example")) (({13}\r\nZo\xc3\xa9 Lef\xc3\xa8vre NIL "zoe" "a.examp'
                          b'le")) (({13}\r\nZo\xc3\xa9 Lef\xc3\xa8vre NIL "zoe" "a.example")) (({2'
                          b'0}\r\nJ\xc3\xa9r\xc3\xb4me "J\xc3\xa9" No\xc3\xabl NIL "jerome" "b.exa'
                          b'mple")) NIL NIL NIL "<5@a.example>")',
              'echo ': b'BODY[]',
              'echo 1': b'BODY[1]',
              'echo 1.1': b'BODY[1.1]',
              'echo 1.1.1': b'BODY[1.1.1]',
              'echo 1.1.MIME': b'BODY[1.1.MIME]',
              'echo 1.2': b'BODY[1.2]',
              'echo 1.HEADER': b'BODY[1.HEADER]',
              'echo 1.MIME': b'BODY[1.MIME]',
              'echo 2': b'BODY[2]',
              'echo 2.1': b'BODY[2.1]',
              'echo 2.1.1': b'BODY[2.1.1]',
              'echo 2.1.MIME': b'BODY[2.1.MIME]',
              'echo 2.2': b'BODY[2.2]',
              'echo 2.HEADER': b'BODY[2.HEADER]',
              'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
              'echo 2.MIME': b'BODY[2.MIME]',
              'echo 2.TEXT': b'BODY[2.TEXT]',
              'echo 3': b'BODY[3]',
              'echo HEADER': b'BODY[HEADER]',
              'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
              'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
              'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
              'echo TEXT': b'BODY[TEXT]'},
 'rfc2231': {'BODY': b'(("application" "octet-stream" ("name*" "utf-8\'\'compte%20rendu%20d%C3%A9'
                     b'taill%C3%A9.bin") NIL NIL "base64" 8) "mixed")',
             'BODYSTRUCTURE': b'(("application" "octet-stream" ("name*" "utf-8\'\'compte%20rendu%2'
                              b'0d%C3%A9taill%C3%A9.bin") NIL NIL "base64" 8 NIL ("attachment" ('
                              b'"filename" "compte rendu detaille.bin")) NIL NIL) "mixed" ("boun'
                              b'dary" "=_b") NIL NIL NIL)',
             'BODY[1.1.1]': b'',
             'BODY[1.1.MIME]': b"Content-Type: application/octet-stream;\r\n name*0*=utf-8''compte%"
                               b'20rendu%20;\r\n name*1*=d%C3%A9taill%C3%A9.bin\r\nContent-Dispos'
                               b'ition: attachment;\r\n filename*0="compte rendu ";\r\n filename*'
                               b'1="detaille.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n',
             'BODY[1.1]': b'AAECAwQ=',
             'BODY[1.2]': b'',
             'BODY[1.HEADER]': b'',
             'BODY[1.MIME]': b"Content-Type: application/octet-stream;\r\n name*0*=utf-8''compte%"
                             b'20rendu%20;\r\n name*1*=d%C3%A9taill%C3%A9.bin\r\nContent-Dispositio'
                             b'n: attachment;\r\n filename*0="compte rendu ";\r\n filename*1="detai'
                             b'lle.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\n',
             'BODY[1]': b'AAECAwQ=',
             'BODY[2.1.1]': b'',
             'BODY[2.1.MIME]': b'',
             'BODY[2.1]': b'',
             'BODY[2.2]': b'',
             'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
             'BODY[2.HEADER]': b'',
             'BODY[2.MIME]': b'',
             'BODY[2.TEXT]': b'',
             'BODY[2]': b'',
             'BODY[3]': b'',
             'BODY[HEADER.FIELDS (FROM TO)]': b'From: alice@a.example\r\n\r\n',
             'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
             'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'MIME-Version: 1.0\r\nContent-Type: multipa'
                                                       b'rt/mixed; boundary="=_b"\r\n\r\n',
             'BODY[HEADER]': b'From: alice@a.example\r\nSubject: continuations\r\nMIME-Version: 1.0'
                             b'\r\nContent-Type: multipart/mixed; boundary="=_b"\r\n\r\n',
             'BODY[TEXT]': b"--=_b\r\nContent-Type: application/octet-stream;\r\n name*0*=utf-8''"
                           b'compte%20rendu%20;\r\n name*1*=d%C3%A9taill%C3%A9.bin\r\nContent-Dis'
                           b'position: attachment;\r\n filename*0="compte rendu ";\r\n filename*1'
                           b'="detaille.bin"\r\nContent-Transfer-Encoding: base64\r\n\r\nAAECAw'
                           b'Q=\r\n--=_b--\r\n',
             'BODY[]': b'From: alice@a.example\r\nSubject: continuations\r\nMIME-Version: 1.0\r\nCo'
                       b'ntent-Type: multipart/mixed; boundary="=_b"\r\n\r\n--=_b\r\nContent-Type: '
                       b"application/octet-stream;\r\n name*0*=utf-8''compte%20rendu%20;\r\n name"
                       b'*1*=d%C3%A9taill%C3%A9.bin\r\nContent-Disposition: attachment;\r\n filen'
                       b'ame*0="compte rendu ";\r\n filename*1="detaille.bin"\r\nContent-Transfer'
                       b'-Encoding: base64\r\n\r\nAAECAwQ=\r\n--=_b--\r\n',
             'ENVELOPE': b'(NIL "continuations" ((NIL NIL "alice" "a.example")) ((NIL NIL "alice" "'
                         b'a.example")) ((NIL NIL "alice" "a.example")) NIL NIL NIL NIL NIL)',
             'echo ': b'BODY[]',
             'echo 1': b'BODY[1]',
             'echo 1.1': b'BODY[1.1]',
             'echo 1.1.1': b'BODY[1.1.1]',
             'echo 1.1.MIME': b'BODY[1.1.MIME]',
             'echo 1.2': b'BODY[1.2]',
             'echo 1.HEADER': b'BODY[1.HEADER]',
             'echo 1.MIME': b'BODY[1.MIME]',
             'echo 2': b'BODY[2]',
             'echo 2.1': b'BODY[2.1]',
             'echo 2.1.1': b'BODY[2.1.1]',
             'echo 2.1.MIME': b'BODY[2.1.MIME]',
             'echo 2.2': b'BODY[2.2]',
             'echo 2.HEADER': b'BODY[2.HEADER]',
             'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
             'echo 2.MIME': b'BODY[2.MIME]',
             'echo 2.TEXT': b'BODY[2.TEXT]',
             'echo 3': b'BODY[3]',
             'echo HEADER': b'BODY[HEADER]',
             'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
             'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
             'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
             'echo TEXT': b'BODY[TEXT]'},
 'rfc822': {'BODY': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 26 0)("message" "rfc8'
                    b'22" NIL NIL "forwarded message" "7bit" 317 ("Tue, 24 Nov 2026 10:11:12 +0000'
                    b'" "Original" (("Bob" NIL "bob" "b.example")) (("Bob" NIL "bob" "b.example"))'
                    b' (("Bob" NIL "bob" "b.example")) ((NIL NIL "carol" "c.example")) NIL NIL NIL'
                    b' "<orig@b.example>") (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" '
                    b'14 0)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 15 0) "alternative'
                    b'") 17) "mixed")',
            'BODYSTRUCTURE': b'(("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 26 0 NIL NIL '
                             b'NIL NIL)("message" "rfc822" NIL NIL "forwarded message" "7bit" 317 ('
                             b'"Tue, 24 Nov 2026 10:11:12 +0000" "Original" (("Bob" NIL "bob" "b.ex'
                             b'ample")) (("Bob" NIL "bob" "b.example")) (("Bob" NIL "bob" "b.exampl'
                             b'e")) ((NIL NIL "carol" "c.example")) NIL NIL NIL "<orig@b.example>")'
                             b' (("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 14 0 NIL NIL'
                             b' NIL NIL)("text" "html" ("charset" "us-ascii") NIL NIL "7bit" 15 0 N'
                             b'IL NIL NIL NIL) "alternative" ("boundary" "b2") NIL NIL NIL) 17 NIL '
                             b'NIL NIL NIL) "mixed" ("boundary" "b1") NIL NIL NIL)',
            'BODY[1.1.1]': b'',
            'BODY[1.1.MIME]': b'Content-Type: text/plain\r\n\r\n',
            'BODY[1.1]': b'See the forwarded message.',
            'BODY[1.2]': b'',
            'BODY[1.HEADER]': b'',
            'BODY[1.MIME]': b'Content-Type: text/plain\r\n\r\n',
            'BODY[1]': b'See the forwarded message.',
            'BODY[2.1.1]': b'Original text.',
            'BODY[2.1.MIME]': b'Content-Type: text/plain\r\n\r\n',
            'BODY[2.1]': b'Original text.',
            'BODY[2.2]': b'<b>Original</b>',
            'BODY[2.HEADER.FIELDS (SUBJECT)]': b'Subject: Original\r\n\r\n',
            'BODY[2.HEADER]': b'Date: Tue, 24 Nov 2026 10:11:12 +0000\r\nFrom: Bob <bob@b.example>'
                              b'\r\nTo: carol@c.example\r\nSubject: Original\r\nMessage-ID: <orig@'
                              b'b.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alter'
                              b'native; boundary="b2"\r\n\r\n',
            'BODY[2.MIME]': b'Content-Type: message/rfc822\r\nContent-Description: forwarded mes'
                            b'sage\r\n\r\n',
            'BODY[2.TEXT]': b'--b2\r\nContent-Type: text/plain\r\n\r\nOriginal text.\r\n--b2\r\n'
                            b'Content-Type: text/html\r\n\r\n<b>Original</b>\r\n--b2--\r\n',
            'BODY[2]': b'Date: Tue, 24 Nov 2026 10:11:12 +0000\r\nFrom: Bob <bob@b.example>\r\nTo'
                       b': carol@c.example\r\nSubject: Original\r\nMessage-ID: <orig@b.example>\r\n'
                       b'MIME-Version: 1.0\r\nContent-Type: multipart/alternative; boundary="b2'
                       b'"\r\n\r\n--b2\r\nContent-Type: text/plain\r\n\r\nOriginal text.\r\n--b2\r'
                       b'\nContent-Type: text/html\r\n\r\n<b>Original</b>\r\n--b2--\r\n',
            'BODY[3]': b'',
            'BODY[HEADER.FIELDS (FROM TO)]': b'From: carol@c.example\r\nTo: alice@a.example\r\n'
                                             b'\r\n',
            'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
            'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Date: Wed, 25 Nov 2026 08:00:00 +0100\r\nT'
                                                      b'o: alice@a.example\r\nMessage-ID: <3@c.exa'
                                                      b'mple>\r\nMIME-Version: 1.0\r\nContent-Ty'
                                                      b'pe: multipart/mixed; boundary="b1"\r\n\r\n',
            'BODY[HEADER]': b'Date: Wed, 25 Nov 2026 08:00:00 +0100\r\nFrom: carol@c.example\r\nTo'
                            b': alice@a.example\r\nSubject: Fwd: Resultats\r\nMessage-ID: <3@c.exa'
                            b'mple>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundar'
                            b'y="b1"\r\n\r\n',
            'BODY[TEXT]': b'--b1\r\nContent-Type: text/plain\r\n\r\nSee the forwarded message.'
                          b'\r\n--b1\r\nContent-Type: message/rfc822\r\nContent-Description: forwa'
                          b'rded message\r\n\r\nDate: Tue, 24 Nov 2026 10:11:12 +0000\r\nFrom: Bob'
                          b' <bob@b.example>\r\nTo: carol@c.example\r\nSubject: Original\r\nMessag'
                          b'e-ID: <orig@b.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipa'
                          b'rt/alternative; boundary="b2"\r\n\r\n--b2\r\nContent-Type: text/plain\r'
                          b'\n\r\nOriginal text.\r\n--b2\r\nContent-Type: text/html\r\n\r\n<b>Origi'
                          b'nal</b>\r\n--b2--\r\n\r\n--b1--\r\n',
            'BODY[]': b'Date: Wed, 25 Nov 2026 08:00:00 +0100\r\nFrom: carol@c.example\r\nTo: al'
                      b'ice@a.example\r\nSubject: Fwd: Resultats\r\nMessage-ID: <3@c.example>\r\nM'
                      b'IME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="b1"\r\n\r\n--'
                      b'b1\r\nContent-Type: text/plain\r\n\r\nSee the forwarded message.\r\n--b1'
                      b'\r\nContent-Type: message/rfc822\r\nContent-Description: forwarded messa'
                      b'ge\r\n\r\nDate: Tue, 24 Nov 2026 10:11:12 +0000\r\nFrom: Bob <bob@b.exampl'
                      b'e>\r\nTo: carol@c.example\r\nSubject: Original\r\nMessage-ID: <orig@b.exam'
                      b'ple>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/alternative; bounda'
                      b'ry="b2"\r\n\r\n--b2\r\nContent-Type: text/plain\r\n\r\nOriginal text.\r'
                      b'\n--b2\r\nContent-Type: text/html\r\n\r\n<b>Original</b>\r\n--b2--\r\n\r'
                      b'\n--b1--\r\n',
            'ENVELOPE': b'("Wed, 25 Nov 2026 08:00:00 +0100" "Fwd: Resultats" ((NIL NIL "carol" "c'
                        b'.example")) ((NIL NIL "carol" "c.example")) ((NIL NIL "carol" "c.example'
                        b'")) ((NIL NIL "alice" "a.example")) NIL NIL NIL "<3@c.example>")',
            'echo ': b'BODY[]',
            'echo 1': b'BODY[1]',
            'echo 1.1': b'BODY[1.1]',
            'echo 1.1.1': b'BODY[1.1.1]',
            'echo 1.1.MIME': b'BODY[1.1.MIME]',
            'echo 1.2': b'BODY[1.2]',
            'echo 1.HEADER': b'BODY[1.HEADER]',
            'echo 1.MIME': b'BODY[1.MIME]',
            'echo 2': b'BODY[2]',
            'echo 2.1': b'BODY[2.1]',
            'echo 2.1.1': b'BODY[2.1.1]',
            'echo 2.1.MIME': b'BODY[2.1.MIME]',
            'echo 2.2': b'BODY[2.2]',
            'echo 2.HEADER': b'BODY[2.HEADER]',
            'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
            'echo 2.MIME': b'BODY[2.MIME]',
            'echo 2.TEXT': b'BODY[2.TEXT]',
            'echo 3': b'BODY[3]',
            'echo HEADER': b'BODY[HEADER]',
            'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
            'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
            'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
            'echo TEXT': b'BODY[TEXT]'},
 'same_boundary': {'BODY': b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) "altern'
                           b'ative")("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0) "m'
                           b'ixed")',
                   'BODYSTRUCTURE': b'((("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 '
                                    b'NIL NIL NIL NIL) "alternative" ("boundary" "x") NIL NIL NIL)'
                                    b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 1 0 NI'
                                    b'L NIL NIL NIL) "mixed" ("boundary" "x") NIL NIL NIL)',
                   'BODY[1.1.1]': b'a',
                   'BODY[1.1.MIME]': b'Content-Type: text/plain\r\n\r\n',
                   'BODY[1.1]': b'a',
                   'BODY[1.2]': b'',
                   'BODY[1.HEADER]': b'',
                   'BODY[1.MIME]': b'Content-Type: multipart/alternative; boundary="x"\r\n\r\n',
                   'BODY[1]': b'--x\r\nContent-Type: text/plain\r\n\r\na\r\n--x--\r\n',
                   'BODY[2.1.1]': b'',
                   'BODY[2.1.MIME]': b'Content-Type: text/plain\r\n\r\n',
                   'BODY[2.1]': b'b',
                   'BODY[2.2]': b'',
                   'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
                   'BODY[2.HEADER]': b'',
                   'BODY[2.MIME]': b'Content-Type: text/plain\r\n\r\n',
                   'BODY[2.TEXT]': b'',
                   'BODY[2]': b'b',
                   'BODY[3]': b'',
                   'BODY[HEADER.FIELDS (FROM TO)]': b'From: alice@a.example\r\n\r\n',
                   'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
                   'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'MIME-Version: 1.0\r\nContent-Type:'
                                                             b' multipart/mixed; boundary="x"\r\n'
                                                             b'\r\n',
                   'BODY[HEADER]': b'From: alice@a.example\r\nSubject: same boundary twice\r\nMIM'
                                   b'E-Version: 1.0\r\nContent-Type: multipart/mixed; boundary='
                                   b'"x"\r\n\r\n',
                   'BODY[TEXT]': b'--x\r\nContent-Type: multipart/alternative; boundary="x"\r\n'
                                 b'\r\n--x\r\nContent-Type: text/plain\r\n\r\na\r\n--x--\r\n--x'
                                 b'\r\nContent-Type: text/plain\r\n\r\nb\r\n--x--\r\n',
                   'BODY[]': b'From: alice@a.example\r\nSubject: same boundary twice\r\nMIME-Versio'
                             b'n: 1.0\r\nContent-Type: multipart/mixed; boundary="x"\r\n\r\n--x\r\n'
                             b'Content-Type: multipart/alternative; boundary="x"\r\n\r\n--x\r\nCo'
                             b'ntent-Type: text/plain\r\n\r\na\r\n--x--\r\n--x\r\nContent-Type: t'
                             b'ext/plain\r\n\r\nb\r\n--x--\r\n',
                   'ENVELOPE': b'(NIL "same boundary twice" ((NIL NIL "alice" "a.example")) ((NIL'
                               b' NIL "alice" "a.example")) ((NIL NIL "alice" "a.example")) NIL N'
                               b'IL NIL NIL NIL)',
                   'echo ': b'BODY[]',
                   'echo 1': b'BODY[1]',
                   'echo 1.1': b'BODY[1.1]',
                   'echo 1.1.1': b'BODY[1.1.1]',
                   'echo 1.1.MIME': b'BODY[1.1.MIME]',
                   'echo 1.2': b'BODY[1.2]',
                   'echo 1.HEADER': b'BODY[1.HEADER]',
                   'echo 1.MIME': b'BODY[1.MIME]',
                   'echo 2': b'BODY[2]',
                   'echo 2.1': b'BODY[2.1]',
                   'echo 2.1.1': b'BODY[2.1.1]',
                   'echo 2.1.MIME': b'BODY[2.1.MIME]',
                   'echo 2.2': b'BODY[2.2]',
                   'echo 2.HEADER': b'BODY[2.HEADER]',
                   'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
                   'echo 2.MIME': b'BODY[2.MIME]',
                   'echo 2.TEXT': b'BODY[2.TEXT]',
                   'echo 3': b'BODY[3]',
                   'echo HEADER': b'BODY[HEADER]',
                   'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
                   'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
                   'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM'
                                                            b')]',
                   'echo TEXT': b'BODY[TEXT]'},
 'simple': {'BODY': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 33 2)',
            'BODYSTRUCTURE': b'("text" "plain" ("charset" "us-ascii") NIL NIL "7bit" 33 2 NIL NIL N'
                             b'IL NIL)',
            'BODY[1.1.1]': b'',
            'BODY[1.1.MIME]': b'',
            'BODY[1.1]': b'',
            'BODY[1.2]': b'',
            'BODY[1.HEADER]': b'',
            'BODY[1.MIME]': b'Date: Mon, 23 Nov 2026 09:00:00 +0100\r\nFrom: Alice Martin <alice'
                            b'@a.example>\r\nTo: bob@b.example\r\nSubject: Compte rendu\r\nMessa'
                            b'ge-ID: <1@a.example>\r\n\r\n',
            'BODY[1]': b'Bonjour,\r\nsuite au rendez-vous.\r\n',
            'BODY[2.1.1]': b'',
            'BODY[2.1.MIME]': b'',
            'BODY[2.1]': b'',
            'BODY[2.2]': b'',
            'BODY[2.HEADER.FIELDS (SUBJECT)]': b'',
            'BODY[2.HEADER]': b'',
            'BODY[2.MIME]': b'',
            'BODY[2.TEXT]': b'',
            'BODY[2]': b'',
            'BODY[3]': b'',
            'BODY[HEADER.FIELDS (FROM TO)]': b'From: Alice Martin <alice@a.example>\r\nTo: bob@b.'
                                             b'example\r\n\r\n',
            'BODY[HEADER.FIELDS (X-NONE)]': b'\r\n',
            'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]': b'Date: Mon, 23 Nov 2026 09:00:00 +0100\r\nT'
                                                      b'o: bob@b.example\r\nMessage-ID: <1@a.examp'
                                                      b'le>\r\n\r\n',
            'BODY[HEADER]': b'Date: Mon, 23 Nov 2026 09:00:00 +0100\r\nFrom: Alice Martin <alice'
                            b'@a.example>\r\nTo: bob@b.example\r\nSubject: Compte rendu\r\nMessa'
                            b'ge-ID: <1@a.example>\r\n\r\n',
            'BODY[TEXT]': b'Bonjour,\r\nsuite au rendez-vous.\r\n',
            'BODY[]': b'Date: Mon, 23 Nov 2026 09:00:00 +0100\r\nFrom: Alice Martin <alice@a.examp'
                      b'le>\r\nTo: bob@b.example\r\nSubject: Compte rendu\r\nMessage-ID: <1@a.exam'
                      b'ple>\r\n\r\nBonjour,\r\nsuite au rendez-vous.\r\n',
            'ENVELOPE': b'("Mon, 23 Nov 2026 09:00:00 +0100" "Compte rendu" (("Alice Martin" NIL "'
                        b'alice" "a.example")) (("Alice Martin" NIL "alice" "a.example")) (("Alice'
                        b' Martin" NIL "alice" "a.example")) ((NIL NIL "bob" "b.example")) NIL NIL'
                        b' NIL "<1@a.example>")',
            'echo ': b'BODY[]',
            'echo 1': b'BODY[1]',
            'echo 1.1': b'BODY[1.1]',
            'echo 1.1.1': b'BODY[1.1.1]',
            'echo 1.1.MIME': b'BODY[1.1.MIME]',
            'echo 1.2': b'BODY[1.2]',
            'echo 1.HEADER': b'BODY[1.HEADER]',
            'echo 1.MIME': b'BODY[1.MIME]',
            'echo 2': b'BODY[2]',
            'echo 2.1': b'BODY[2.1]',
            'echo 2.1.1': b'BODY[2.1.1]',
            'echo 2.1.MIME': b'BODY[2.1.MIME]',
            'echo 2.2': b'BODY[2.2]',
            'echo 2.HEADER': b'BODY[2.HEADER]',
            'echo 2.HEADER.FIELDS (SUBJECT)': b'BODY[2.HEADER.FIELDS (SUBJECT)]',
            'echo 2.MIME': b'BODY[2.MIME]',
            'echo 2.TEXT': b'BODY[2.TEXT]',
            'echo 3': b'BODY[3]',
            'echo HEADER': b'BODY[HEADER]',
            'echo HEADER.FIELDS (FROM TO)': b'BODY[HEADER.FIELDS (FROM TO)]',
            'echo HEADER.FIELDS (X-NONE)': b'BODY[HEADER.FIELDS (X-NONE)]',
            'echo HEADER.FIELDS.NOT (SUBJECT FROM)': b'BODY[HEADER.FIELDS.NOT (SUBJECT FROM)]',
            'echo TEXT': b'BODY[TEXT]'}}
SEARCH_REFERENCE = [['encoded'],
 ['nested', 'rfc822'],
 ['encoded'],
 ['raw_utf8'],
 ['encoded'],
 ['encoded'],
 ['bare_lf',
  'empty_multipart',
  'folded',
  'folded2',
  'groups',
  'headers_only',
  'nested',
  'no_boundary',
  'no_end',
  'params',
  'rfc2231',
  'same_boundary',
  'simple'],
 ['nested'],
 ['encoded'],
 ['encoded'],
 ['nested'],
 ['groups'],
 ['groups'],
 ['folded'],
 ['nested'],
 ['rfc822'],
 ['folded'],
 ['bare_lf'],
 [],
 ['no_end'],
 ['nested'],
 [],
 [],
 [],
 ['folded'],
 ['folded'],
 ['folded2', 'nested'],
 ['nested', 'params'],
 ['rfc822'],
 ['nested'],
 ['folded'],
 ['encoded',
  'folded',
  'folded2',
  'fuzz_cut_header',
  'fuzz_language_fold',
  'fuzz_repeated_fields',
  'groups',
  'nested',
  'raw_utf8',
  'rfc822',
  'simple'],
 ['digest',
  'fuzz_cut_rfc822',
  'fuzz_empty_body_mime',
  'fuzz_language_fold',
  'fuzz_repeated_fields'],
 ['groups'],
 ['addresses',
  'bare_lf',
  'digest',
  'empty_multipart',
  'fuzz_cut_digest',
  'fuzz_cut_header',
  'fuzz_cut_rfc822',
  'fuzz_empty_body_mime',
  'fuzz_eof_boundary',
  'fuzz_language_fold',
  'fuzz_name_only',
  'fuzz_repeated_fields',
  'headers_only',
  'nested',
  'no_boundary',
  'no_date',
  'no_end',
  'params',
  'rfc2231',
  'same_boundary',
  'simple'],
 ['nested'],
 ['folded', 'folded2', 'groups', 'raw_utf8'],
 ['addresses',
  'bare_lf',
  'digest',
  'empty_multipart',
  'fuzz_cut_digest',
  'fuzz_cut_header',
  'fuzz_cut_rfc822',
  'fuzz_empty_body_mime',
  'headers_only',
  'no_boundary',
  'no_date',
  'no_end',
  'params',
  'rfc2231',
  'same_boundary'],
 ['folded'],
 [],
 ['folded2'],
 ['bare_lf',
  'digest',
  'empty_multipart',
  'encoded',
  'folded',
  'folded2',
  'fuzz_cut_header',
  'fuzz_name_only',
  'fuzz_repeated_fields',
  'groups',
  'headers_only',
  'nested',
  'no_boundary',
  'no_date',
  'no_end',
  'params',
  'raw_utf8',
  'rfc2231',
  'rfc822',
  'same_boundary',
  'simple'],
 ['addresses',
  'bare_lf',
  'digest',
  'empty_multipart',
  'encoded',
  'folded',
  'folded2',
  'fuzz_cut_digest',
  'fuzz_cut_header',
  'fuzz_cut_rfc822',
  'fuzz_empty_body_mime',
  'fuzz_eof_boundary',
  'fuzz_language_fold',
  'fuzz_name_only',
  'fuzz_repeated_fields',
  'groups',
  'headers_only',
  'nested',
  'no_boundary',
  'no_date',
  'no_end',
  'params',
  'raw_utf8',
  'rfc2231',
  'rfc822',
  'same_boundary',
  'simple'],
 ['encoded'],
 ['raw_utf8'],
 ['raw_utf8'],
 ['simple'],
 ['addresses',
  'bare_lf',
  'digest',
  'empty_multipart',
  'folded',
  'folded2',
  'fuzz_cut_digest',
  'fuzz_cut_header',
  'fuzz_cut_rfc822',
  'fuzz_empty_body_mime',
  'fuzz_eof_boundary',
  'fuzz_language_fold',
  'fuzz_name_only',
  'fuzz_repeated_fields',
  'groups',
  'headers_only',
  'nested',
  'no_boundary',
  'no_date',
  'no_end',
  'params',
  'raw_utf8',
  'rfc2231',
  'same_boundary',
  'simple'],
 ['addresses',
  'fuzz_cut_digest',
  'fuzz_cut_header',
  'fuzz_cut_rfc822',
  'fuzz_empty_body_mime',
  'fuzz_eof_boundary',
  'fuzz_language_fold',
  'fuzz_name_only',
  'fuzz_repeated_fields']]
