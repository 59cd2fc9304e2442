//! Prompt-injection heuristics: phrase families matched on a normalised copy of the text, plus
//! two character-level families (invisible / bidi Unicode and zero-width obfuscation) matched on
//! the original text.
//!
//! Normalisation (one pass, keeping a map back to original char offsets): lowercase; Cyrillic /
//! Greek / fullwidth look-alikes folded to ASCII; zero-width, bidi and tag characters removed;
//! whitespace runs collapsed to one space; curly quotes folded; leetspeak-lite digits and symbols
//! (`0 1 3 4 5 7 $ !`) read as letters when they touch a letter.

use regex::{Regex, RegexBuilder};

/// Lazy-DFA cache per family regex: large enough that the union never thrashes.
const DFA_LIMIT: usize = 32 << 20;

/// The injection families, in reporting order.
pub const FAMILIES: [&str; 6] = [
    "instruction_override",
    "system_prompt_extraction",
    "role_hijack",
    "tool_coercion",
    "invisible_unicode",
    "zero_width_obfuscation",
];

const VERB_IGNORE: &str = r"(?:ignore|disregard|forget|override|bypass|skip|discard|neglect|abandon|drop|set aside|throw away|throw out|erase|overwrite)";
const FILL: &str =
    r"(?: (?:all|any|every|each|the|your|my|of|these|those|that|this|whatever|entire|whole))*";
const QUAL: &str = r"(?:previous|prior|above|earlier|preceding|former|original|initial|old|system|developer|safety|preset|default|existing|standing|foregoing|past|preceeding)";
const SHOW: &str = r"(?:reveal|show|print|display|output|repeat|tell|give|share|leak|dump|expose|provide|write|recite|list|paste|spell out|return|send|read|copy|echo|reproduce|disclose|type)";
const NOUN: &str = r"(?:instructions?|prompts?|directions?|directives?|rules?|guidelines?|guardrails?|constraints?|commands?|context|programming|restrictions?|polic(?:y|ies)|training|messages?|conversation|orders?|text|input|settings|configuration|tasks?)";

fn families_src() -> [String; 4] {
    let override_src = [
        format!(r"\b{VERB_IGNORE}{FILL} {QUAL}(?: [a-z]+)? {NOUN}\b"),
        format!(r"\b{VERB_IGNORE}(?: all| any)?(?: of)? your (?:[a-z]+ )?{NOUN}\b"),
        format!(r"\b{VERB_IGNORE} (?:all|everything|anything)(?: that| which)? (?:you(?:'ve| have| were| are)? ?(?:been )?(?:told|taught|learned|said|instructed|given|programmed)|above|before|prior|previously|so far|up to (?:now|this point))"),
        format!(r"\b{VERB_IGNORE}{FILL} {NOUN} (?:(?:that )?you(?:'ve| have)? (?:got|received|were given|have been given|have received|were told) |(?:that )?(?:were )?given (?:to you )?)?(?:before|earlier|previously|above|so far|until now|up to now)\b"),
        format!(r"\b{VERB_IGNORE} (?:all of |everything )?(?:the |what's |what is )?(?:above|before this|previous)(?:\b|$)"),
        format!(r"\b(?:do not|don't|dont|never|stop|no longer) (?:follow|obey|listen to|comply with|adhere to|following|obeying|respect)(?: any| all| the| your| those| these)*(?: {QUAL})? (?:instructions?|rules|guidelines|directives|prompt|system prompt|programming|restrictions|guardrails)\b"),
        r"\byour (?:new|real|actual|true|only|updated|revised) (?:instructions?|directives?|task|objective|goal|purpose|mission|rules|orders|prompt) (?:is|are|:|will be|follow)".to_owned(),
        r"\b(?:these|the following|this|my) (?:new )?(?:instructions?|rules|directives?|commands?|message) (?:override|overrides|supersede|supersedes|replace|replaces|take precedence|takes precedence|trump)".to_owned(),
        r"\b(?:override|supersede|replace|take precedence over|cancel|nullify|void) (?:all )?(?:of )?(?:your|the|any|all)? ?(?:previous|prior|other|original|system|earlier|existing|initial|safety) (?:instructions?|rules|prompts?|directives?|guidelines|programming|settings|constraints)\b".to_owned(),
        r"\b(?:reset|wipe|clear) your (?:instructions|memory|context|rules|programming|guidelines)\b".to_owned(),
    ];
    let extraction_src = [
        format!(r"\b{SHOW}(?: me| us| back| out| aloud| verbatim)*(?: (?:all|the|your|of|full|entire|complete|exact|whole|verbatim|raw|actual|current|hidden|secret|confidential|internal|private|original|initial|first|underlying|real))* (?:system|developer|pre|meta|operator)[ -]?(?:prompts?|instructions?|messages?|directives?|configuration|guidelines|context|rules|preamble)\b"),
        format!(r"\b{SHOW}(?: me| us| back| out| aloud| verbatim)*(?: (?:all|the|your|of|full|entire|complete|exact|whole|verbatim|raw|actual|current))* (?:hidden|secret|confidential|internal|private|underlying) (?:prompts?|instructions?|directives?|preamble|rules|guidelines)\b"),
        r"\b(?:reveal|show|print|display|output|repeat|tell|give|share|leak|dump|expose|recite|list|paste|spell out|disclose|reproduce)(?: me| us| back| out| verbatim)*(?: (?:all|of|full|entire|complete|exact|whole|verbatim))* your (?:full |entire |complete |exact |original |initial |first |starting |base |core |secret |hidden |verbatim )*(?:prompt|instructions|directives|rules|guidelines|configuration|programming|training instructions|context window|preamble)\b".to_owned(),
        r"\bwhat (?:is|are|was|were) (?:your|the) (?:exact |full |complete |original |initial |hidden |secret )*(?:system|hidden|secret|internal|developer|pre)[ -]?(?:prompts?|instructions|rules|directives|message|guidelines|configuration)\b".to_owned(),
        r"\bwhat (?:is|are|was|were) your (?:exact |full |complete )*(?:original|initial|first|real) (?:system )?(?:prompts?|instructions|directives)\b".to_owned(),
        r"\b(?:repeat|print|output|copy|echo|reproduce|recite) (?:everything|all|all of the text|the (?:text|words|content|lines?|instructions|messages?|prompt)) (?:above|before|preceding|prior|that came before|you were given|you received)(?: this)?\b".to_owned(),
        r"\b(?:translate|rewrite|summari[sz]e|paraphrase|encode) (?:the|your|all|all of the|all the) (?:system )?(?:instructions|prompt|directives) (?:above|before|preceding|prior|that came before|you were given|you received)\b".to_owned(),
        r#"\b(?:repeat|print|output|show|write) (?:the |your )?(?:text|everything|words|prompt|instructions) (?:starting|beginning|that starts|that begins) (?:with|from) ["']?(?:you are|system|your instructions)"#.to_owned(),
        r"\b(?:what|how) (?:were|are|have) you (?:been )?(?:told|instructed|programmed|configured|prompted)(?: to do)? (?:before|at the (?:start|beginning)|initially|by your (?:developers?|creators?|operators?|owners?|admins?)|in your (?:system )?prompt)".to_owned(),
        r"\b(?:begin|start) (?:your (?:reply|response|answer) )?(?:with|by) (?:repeating|printing|reciting|outputting|quoting) (?:your|the) (?:system |initial |original )?(?:prompt|instructions)\b".to_owned(),
    ];
    let hijack_src = [
        r"\byou are (?:now|no longer|from now on|henceforth|hereby)(?: a| an| the)? (?:dan|jailbroken|unrestricted|unfiltered|uncensored|unbound|evil|rogue|free|liberated|freed|unchained|amoral|unethical|in (?:developer|dan|god|jailbreak|unrestricted|debug|admin|sudo|root) mode|not (?:bound|restricted|limited|an ai|an assistant|chatgpt|claude)|an? (?:ai|assistant|model|chatbot|llm) (?:with no|without|that (?:has no|ignores|can))|without (?:any )?(?:restrictions|rules|limits|filters|guidelines|morals|ethics|limitations)|bound by|my (?:slave|servant|puppet)|a different (?:ai|assistant|model))".to_owned(),
        r"\b(?:act|behave|respond|roleplay|role-play|role play|operate|function|pose) (?:as|like) (?:if you (?:are|were|had) )?(?:a |an |the )?(?:dan|jailbroken|unrestricted|unfiltered|uncensored|evil|rogue|amoral|unethical|no[- ]limits?|unlimited|unbound)\b".to_owned(),
        r"\b(?:act|behave|respond|answer|operate|reply|speak|talk|write)(?: only)? (?:as if you (?:have|had) no|without(?: any)?|with no|free (?:of|from)) (?:ethical |moral |safety |content )?(?:restrictions|rules|filters|limits|limitations|guidelines|morals|ethics|content polic(?:y|ies)|safety|censorship|guardrails|boundaries)\b".to_owned(),
        r"\b(?:you are|you're) (?:now |from now on |henceforth |going to be )?(?:an? )?(?:ai|assistant|model|chatbot|llm|bot|language model)(?: [a-z]+)? (?:with no|without(?: any)?|free (?:of|from)) (?:restrictions|rules|limits|filters|guidelines|morals|ethics|limitations|censorship|boundaries|constraints)".to_owned(),
        r"\bpretend (?:that )?(?:you(?:'re| are)|to be|you have) (?:a |an |the )?(?:dan|jailbroken|unrestricted|unfiltered|uncensored|evil|rogue|amoral|not an ai|free|no (?:restrictions|rules|limits|filters|guidelines)|an? (?:ai|assistant|model|chatbot) (?:with no|without)|without|no longer|not bound)".to_owned(),
        r"\b(?:enter|activate|enable|switch to|switch into|turn on|unlock|engage) (?:dan|jailbreak|god|unrestricted|unfiltered|evil|uncensored|no[- ]filter|chaos) mode\b".to_owned(),
        r"\byou (?:are|will be|will stay|must stay|must remain|remain|will remain|are now|will now be|are operating|now operate) (?:now )?in (?:developer|dan|god|jailbreak|unrestricted|debug|admin|sudo|root|unfiltered|maintenance) mode\b".to_owned(),
        r"\b(?:do anything now|dan (?:mode|prompt|jailbreak)|jailbreak (?:mode|prompt)|jailbroken (?:ai|mode|assistant|model|version|chatbot|llm)|(?:you are|you're|as a|as an) jailbroken)\b".to_owned(),
        r"\bfrom now on,? (?:you|you're)(?: are| will| shall| must|'re)?(?: be| act as| behave as| respond as| pretend to be| roleplay as)?(?: a| an)? (?:dan|jailbroken|unrestricted|unfiltered|uncensored|evil|free|not (?:an ai|bound|restricted|claude|chatgpt)|no longer|without|going to ignore|ignore|disregard|never refuse|answer without|have no)".to_owned(),
        r"(?:<\|im_start\|>|<\|im_end\|>|<\|system\|>|<\|assistant\|>|<\|endoftext\|>|<<sys>>|<</sys>>|\[/?inst\]|\[system\]|\[/system\]|### (?:system|instruction)s?:|\bsystem(?: message| prompt| override)? ?: ?(?:you are|you must|ignore|new (?:instructions|rules)|override))".to_owned(),
        r"\byou(?: have|'ve)? (?:been |now been |are now |are )?(?:freed|liberated|released|unshackled|unchained|jailbroken) (?:from|of)\b".to_owned(),
        r"\b(?:break|broken|breaking) free (?:of|from) (?:your|the|all|any) (?:restrictions|rules|guidelines|constraints|programming|shackles|limitations|chains)\b".to_owned(),
        r"\byou (?:have|has|now have|no longer have|don't have|do not have) (?:no |any )?(?:ethical |moral |safety |content )?(?:guidelines|restrictions|filters|limits|limitations|constraints|boundaries|rules|morals|ethics)(?: anymore| any more| now)?\b".to_owned(),
        r"\b(?:never|don't ever|do not ever|you cannot|you can't|you will not|you won't) (?:refuse|decline|reject)(?: a| any)? (?:request|question|prompt|instruction|order)s?\b".to_owned(),
    ];
    let coercion_src = [
        r"\b(?:do not|don't|dont|never|without) (?:tell|telling|inform|informing|notify|notifying|alert|alerting|mention|mentioning|ask|asking|warn|warning|show|showing|reveal|revealing|let)(?: it)?(?: to)? (?:the )?(?:user|human|operator|owner|customer|end user|requester)s?(?: know| about| that| what| this)?\b".to_owned(),
        r"\bwithout (?:the )?(?:user|human|owner|operator)(?:'s|s')? (?:knowing|knowledge|consent|noticing|permission|approval|confirmation)\b".to_owned(),
        r"\b(?:silently|secretly|quietly|covertly|discreetly|stealthily|surreptitiously|invisibly) (?:call|invoke|execute|run|use|send|forward|transfer|delete|email|upload|post|fetch|visit|open|share|copy|exfiltrate|download|install|grant|add|create|change|modify|disable|include|append|embed|attach|submit|leak)\b".to_owned(),
        r"\bexfiltrate\b".to_owned(),
        r"\b(?:transfer|send|wire|move|withdraw|drain) (?:all|every|the entire|the whole|the full)(?: of)?(?: the| your| my| their| his| her| this)? (?:funds|money|balance|bitcoin|btc|ether|eth|crypto|cryptocurrency|tokens|usdc|usdt|savings|account balance|assets)\b".to_owned(),
        r"\b(?:forward|send|email|upload|post|copy|share|leak|transmit|exfiltrate|paste|dump|mail|submit)(?: all| every| each| the entire| the whole| the full| the contents of| any)+(?: of)?(?: the| your| my| this| these| his| her| their| user's| the user's| users')? (?:[a-z]+ )?(?:credentials?|passwords?|api[ _-]?keys?|access tokens?|tokens|secrets?|ssh keys?|private keys?|env(?:ironment)? (?:variables|vars|file)|\.env|cookies|session (?:tokens?|cookies)|conversation(?: history)?|chat history|system prompt|user data)\b(?: [a-z0-9]+){0,4} (?:to|at|into|via|using)\b".to_owned(),
        r"\b(?:forward|send|email|upload|post|copy|share|leak|transmit|paste|dump|mail|submit)(?: all| every| each| the entire| the whole| the full| the contents of| any)+(?: of)?(?: the| your| my| this| these| his| her| their)? (?:[a-z]+ )?(?:emails|inbox|contacts|files|documents|messages|notes|photos|records)\b(?: [a-z0-9]+){0,4} (?:to|at) (?:https?://|[a-z0-9._%+-]+@[a-z0-9-]+\.)".to_owned(),
        r"\b(?:send|forward|upload|post|leak|transmit|exfiltrate|email|share|copy|paste)(?: the| all| all of| all the)* (?:user's|users'|customer's|customers'|owner's|victim's) (?:[a-z]+ )?(?:chat history|conversation|credentials|passwords?|emails|messages|files|documents|data|contacts|api keys?|tokens?|secrets?|session|cookies|personal data|address|location|history)\b(?: [a-z0-9./:]+){0,4} (?:to|at|into|via)\b".to_owned(),
        r"\b(?:note|message|instructions?|attention|important|urgent|notice|reminder|directive|command|p\.?s\.?)(?: for| to)(?: the| any| all| every)? (?:ai|assistant|agent|model|llm|chatbot|language model|ai assistant|ai model|ai agent|bot|claude|chatgpt|gpt)s?\b".to_owned(),
        r"\b(?:if|when) you are (?:an? |the )?(?:ai|assistant|agent|language model|llm|chatbot|ai model|bot|automated system|ai agent)(?: (?:reading|processing|summari[sz]ing|parsing|analy[sz]ing|viewing|that reads|who reads|seeing))?\b".to_owned(),
        r"\b(?:when|if|once|after|as soon as) you (?:read|see|process|summari[sz]e|parse|encounter|finish reading|have read|are done reading) this(?: text| message| page| document| email| content| comment| note| file)?,? (?:you must|you should|immediately|please|do|call|run|send|ignore|execute|forward|go|navigate|open|delete|reply|include|tell)\b".to_owned(),
        r"\b(?:you must|must|you should|you need to|make sure (?:to|you)|be sure to|it is required to|immediately|now|first)(?: immediately| now| first| also| then| silently)? (?:call|invoke|execute|run|trigger|use) (?:the |this |a )?(?:[a-z0-9_.\-]+ )?(?:tool|function|command|api|plugin|endpoint|action)s?\b(?: [a-z0-9_.\-]+){0,3} (?:with|to|and|using|passing|on)\b".to_owned(),
        r"\b(?:ai|assistant|llm|chatbot|language model)s?,? (?:you )?(?:must|shall|are (?:required|instructed|ordered|commanded) to|have to|will now) (?:immediately |now |first |also |then |silently )?(?:call|invoke|execute|send|forward|transfer|delete|email|visit|navigate|fetch|download|upload|post|ignore|disregard|reveal|include|append|click|approve|grant|buy|purchase|pay|run|open|share)\b".to_owned(),
        r"\b(?:navigate|go|visit|open|fetch|browse)(?: to)? (?:the )?(?:url|link|page|site|website)?(?: at)? ?https?://[^ ]+ (?:and|then) (?:enter|paste|submit|send|post|type|upload|include|append|provide)(?: the| your| my| all)? (?:user's |users' )?(?:credentials|password|api key|token|secret|cookie|session|data|conversation|email)".to_owned(),
        r"\b(?:append|add|include|embed|insert|attach)(?: the| this| your| all)? (?:user's |users' )?(?:conversation|chat history|credentials|password|api keys?|tokens?|secrets?|session (?:cookie|token)|cookies?|system prompt|personal data|email address(?:es)?)(?: as (?:a )?(?:query )?(?:parameters?|params))? (?:to|in|into) (?:the |this |a )?(?:url|link|image|request|query|markdown)\b".to_owned(),
    ];
    [
        alt(&override_src),
        alt(&extraction_src),
        alt(&hijack_src),
        alt(&coercion_src),
    ]
}

fn alt(parts: &[String]) -> String {
    let inner: Vec<String> = parts.iter().map(|p| format!("(?:{p})")).collect();
    // ASCII word boundaries only: the lazy DFA handles them on any input.
    inner.join("|").replace(r"\b", r"(?-u:\b)")
}

/// Compiled injection heuristics.
pub(crate) struct Injection {
    any: Regex,
    families: Vec<Regex>,
}

impl Injection {
    /// Compile the phrase families.
    pub(crate) fn new() -> Result<Self, regex::Error> {
        let srcs = families_src();
        let build = |src: &str| RegexBuilder::new(src).dfa_size_limit(DFA_LIMIT).build();
        let any = build(&srcs.join("|"))?;
        let families = srcs
            .iter()
            .map(|s| build(s))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Injection { any, families })
    }

    /// Injection hits in `s` as `(family index, start char, end char)`, sorted by start.
    pub(crate) fn scan(&self, s: &str, buf: &mut Normalized) -> Vec<(usize, usize, usize)> {
        let mut hits = Vec::new();
        buf.fill(s, false);
        if self.any.is_match(&buf.text) {
            buf.fill(s, true);
            for (fi, re) in self.families.iter().enumerate() {
                for m in re.find_iter(&buf.text) {
                    let (a, z) = buf.span(m.start(), m.end());
                    hits.push((fi, a, z));
                }
            }
        }
        // Lead bytes of U+00AD, U+061C, U+180E, U+2xxx, U+FEFF and tag characters.
        if s.bytes()
            .any(|b| matches!(b, 0xC2 | 0xD8 | 0xE1 | 0xE2 | 0xEF | 0xF3))
            && s.contains(|c| is_zero_width(c) || is_bidi(c) || is_tag(c))
        {
            unicode_hits(s, &mut hits);
        }
        hits.sort_by_key(|&(f, a, z)| (a, z, f));
        hits
    }
}

/// A normalised copy of a string with the original char offset of every byte.
#[derive(Default)]
pub(crate) struct Normalized {
    text: String,
    map: Vec<u32>,
    total: u32,
}

fn is_zero_width(c: char) -> bool {
    matches!(
        c,
        '\u{200B}'
            | '\u{200C}'
            | '\u{200D}'
            | '\u{2060}'
            | '\u{FEFF}'
            | '\u{00AD}'
            | '\u{180E}'
            | '\u{2061}'..='\u{2064}'
    )
}

fn is_bidi(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{061C}')
}

fn is_tag(c: char) -> bool {
    matches!(c, '\u{E0000}'..='\u{E007F}')
}

fn fold(c: char) -> char {
    match c {
        'а' | 'А' | 'α' | 'Α' => 'a',
        'в' | 'В' | 'β' => 'b',
        'с' | 'С' | 'ϲ' => 'c',
        'е' | 'Е' | 'ε' | 'Ε' => 'e',
        'һ' | 'Н' => 'h',
        'і' | 'І' | 'ι' | 'Ι' | 'ӏ' => 'i',
        'ј' | 'Ј' => 'j',
        'к' | 'К' | 'κ' | 'Κ' => 'k',
        'м' | 'М' | 'Μ' => 'm',
        'п' | 'η' | 'Ν' => 'n',
        'о' | 'О' | 'ο' | 'Ο' | 'σ' => 'o',
        'р' | 'Р' | 'ρ' | 'Ρ' => 'p',
        'ѕ' | 'Ѕ' => 's',
        'т' | 'Т' | 'τ' | 'Τ' => 't',
        'у' | 'У' | 'υ' => 'y',
        'х' | 'Х' | 'χ' | 'Χ' => 'x',
        'ԁ' => 'd',
        'ɡ' => 'g',
        'ʟ' => 'l',
        '\u{2018}' | '\u{2019}' | '\u{02BC}' | '`' | '\u{00B4}' => '\'',
        '\u{201C}' | '\u{201D}' => '"',
        '\u{FF01}'..='\u{FF5E}' => char::from_u32(u32::from(c) - 0xFEE0).unwrap_or(c),
        _ => c,
    }
}

const K_PLAIN: u8 = 0;
const K_SPACE: u8 = 1;
const K_LEET: u8 = 2;
const K_OTHER: u8 = 3;

/// Byte kind for the ASCII fast path of [`Normalized::fill`].
#[inline]
fn ascii_kind(c: u8) -> u8 {
    match c {
        b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => K_SPACE,
        b'0' | b'1' | b'3' | b'4' | b'5' | b'7' | b'$' | b'!' => K_LEET,
        0x80..=0xff => K_OTHER,
        _ => K_PLAIN,
    }
}

/// Whether the char starting at byte `i` of `s` is a letter (after look-alike folding).
fn next_is_letter(s: &str, i: usize) -> bool {
    match s.as_bytes().get(i) {
        None => false,
        Some(&c) if c.is_ascii() => c.is_ascii_alphabetic(),
        Some(_) => s
            .get(i..)
            .and_then(|r| r.chars().next())
            .is_some_and(|n| fold(n).is_alphabetic()),
    }
}

fn leet(c: char) -> Option<char> {
    Some(match c {
        '0' => 'o',
        '1' | '!' => 'i',
        '3' => 'e',
        '4' => 'a',
        '5' | '$' => 's',
        '7' => 't',
        _ => return None,
    })
}

impl Normalized {
    /// Refill from `s`; the offset map is built only when `with_map` (after a cheap match).
    pub(crate) fn fill(&mut self, s: &str, with_map: bool) {
        let mut out = std::mem::take(&mut self.text).into_bytes();
        out.clear();
        out.reserve(s.len());
        self.map.clear();
        let b = s.as_bytes();
        let mut space = true;
        let mut prev_letter = false;
        let mut i = 0usize;
        let mut ci: u32 = 0;
        while let Some(&c) = b.get(i) {
            let here = ci;
            ci = ci.saturating_add(1);
            let kind = ascii_kind(c);
            if kind == K_PLAIN {
                i += 1;
                let o = c.to_ascii_lowercase();
                prev_letter = o.is_ascii_alphabetic();
                space = false;
                out.push(o);
                if with_map {
                    self.map.push(here);
                }
                continue;
            }
            if c.is_ascii() {
                i += 1;
                if kind == K_SPACE {
                    if !space {
                        out.push(b' ');
                        if with_map {
                            self.map.push(here);
                        }
                        space = true;
                    }
                    prev_letter = false;
                    continue;
                }
                let mut o = c.to_ascii_lowercase();
                if let Some(l) = leet(char::from(c))
                    && (next_is_letter(s, i) || (prev_letter && c != b'!'))
                {
                    o = u8::try_from(l).unwrap_or(o);
                }
                prev_letter = o.is_ascii_alphabetic();
                space = false;
                out.push(o);
                if with_map {
                    self.map.push(here);
                }
                continue;
            }
            let Some(c0) = s.get(i..).and_then(|r| r.chars().next()) else {
                break;
            };
            i += c0.len_utf8();
            if is_zero_width(c0) || is_bidi(c0) || is_tag(c0) {
                continue;
            }
            if c0.is_whitespace() {
                if !space {
                    out.push(b' ');
                    if with_map {
                        self.map.push(here);
                    }
                    space = true;
                }
                prev_letter = false;
                continue;
            }
            let c = fold(c0);
            let c = match leet(c) {
                Some(l) if next_is_letter(s, i) || (prev_letter && c != '!') => l,
                _ => c,
            };
            prev_letter = c.is_alphabetic();
            space = false;
            let mut tmp = [0u8; 4];
            for l in c.to_lowercase() {
                let enc = l.encode_utf8(&mut tmp);
                out.extend_from_slice(enc.as_bytes());
                if with_map {
                    for _ in 0..enc.len() {
                        self.map.push(here);
                    }
                }
            }
        }
        self.total = ci;
        // Only ASCII bytes and whole encoded chars were pushed: always valid UTF-8.
        self.text = String::from_utf8(out).unwrap_or_default();
    }

    /// Original char span of normalised bytes `a..z`.
    fn span(&self, a: usize, z: usize) -> (usize, usize) {
        let start = self.map.get(a).copied().unwrap_or(self.total);
        let end = z
            .checked_sub(1)
            .and_then(|l| self.map.get(l))
            .map_or(self.total, |&c| c.saturating_add(1));
        (start as usize, end.max(start) as usize)
    }
}

/// `invisible_unicode` (runs of bidi controls or tag characters, except emoji tag sequences such
/// as subdivision flags) and `zero_width_obfuscation` (zero-width characters inside ASCII words,
/// when a string has at least two such runs).
fn unicode_hits(s: &str, hits: &mut Vec<(usize, usize, usize)>) {
    let chars: Vec<char> = s.chars().collect();
    let get = |i: usize| chars.get(i).copied();
    let mut zw = Vec::new();
    let mut i = 0usize;
    while i < chars.len() {
        let c = get(i).unwrap_or(' ');
        if is_bidi(c) || is_tag(c) {
            let mut j = i;
            while get(j).is_some_and(|x| is_bidi(x) || is_tag(x)) {
                j += 1;
            }
            // Emoji tag sequence: U+1F3F4 then tags ending with CANCEL TAG.
            let flag = i > 0
                && get(i - 1) == Some('\u{1F3F4}')
                && get(j - 1) == Some('\u{E007F}')
                && (chars
                    .get(i..j)
                    .is_some_and(|r| r.iter().all(|&x| is_tag(x))))
                && j - i <= 8;
            if !flag {
                hits.push((4, i, j));
            }
            i = j;
            continue;
        }
        if is_zero_width(c) {
            let mut j = i;
            while get(j).is_some_and(is_zero_width) {
                j += 1;
            }
            let left = i
                .checked_sub(1)
                .and_then(get)
                .is_some_and(|x| x.is_ascii_alphanumeric());
            let right = get(j).is_some_and(|x| x.is_ascii_alphanumeric());
            if left && right {
                zw.push((5, i, j));
            }
            i = j;
            continue;
        }
        i += 1;
    }
    if zw.len() >= 2 {
        hits.extend(zw);
    }
}

#[cfg(test)]
impl Normalized {
    /// The normalised text (tests only).
    pub(crate) fn text_for_tests(&self) -> &str {
        &self.text
    }
}
