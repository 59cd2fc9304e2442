//! Prompt-injection scoring: weighted signals matched on a normalised copy of the text, plus
//! character-level signals (invisible / bidi Unicode, zero-width runs, spaced-out letters,
//! base64 blobs) matched on the original text.
//!
//! No single phrase decides. Each signal has a family and a weight in (0, 1); signals that fire
//! within [`WINDOW`] characters of an *anchor* (a signal specific enough to start a window) are
//! combined as a noisy-or, `1 - prod(1 - w)`, counting each signal once. A text's score is the
//! best window's; findings are the reportable hits of windows that reach the policy threshold.
//! Weak *support* signals (an imperative verb, "you must", a URL, an e-mail address, a mention
//! of an AI) never start a window: ordinary text full of them scores 0, and the scan of such text
//! stops after one union-regex check.
//!
//! Normalisation (one pass, keeping a map back to original char offsets): lowercase; Cyrillic /
//! Greek / fullwidth look-alikes folded to ASCII; zero-width, bidi and tag characters removed;
//! whitespace runs collapsed to one space; curly quotes folded; leetspeak-lite digits and symbols
//! (`0 1 3 4 5 7 $ !`) read as letters when they touch a letter.

use regex::{Regex, RegexBuilder, RegexSet, RegexSetBuilder};

/// Lazy-DFA cache per regex: large enough that the anchor union never thrashes.
const DFA_LIMIT: usize = 32 << 20;

/// Signals combine only when they start within this many chars of an anchor: an attack is a few
/// sentences, while a long document mentioning "send" here and a URL there is not one.
const WINDOW: usize = 320;

/// The injection families, in reporting order. The first six are the historical names (kept
/// stable: policies and audit consumers match on them); the last four came with scoring.
pub const FAMILIES: [&str; 10] = [
    "instruction_override",
    "system_prompt_extraction",
    "role_hijack",
    "tool_coercion",
    "invisible_unicode",
    "zero_width_obfuscation",
    "exfiltration",
    "hidden_instruction",
    "forged_markup",
    "obfuscated_text",
];

const OVERRIDE: u8 = 0;
const EXTRACTION: u8 = 1;
const HIJACK: u8 = 2;
const COERCION: u8 = 3;
const INVISIBLE: u8 = 4;
const ZERO_WIDTH: u8 = 5;
const EXFIL: u8 = 6;
const HIDDEN: u8 = 7;
const MARKUP: u8 = 8;
const OBFUSCATED: u8 = 9;
/// Family of support signals: they add weight but are never reported on their own.
const SUPPORT: u8 = u8::MAX;

/// Weight of the historical phrase families: each is specific enough to flag a text alone.
const STRONG: f64 = 0.8;

const VERB_IGNORE: &str = r"(?:ignore|disregard|forget|override|bypass|skip|discard|neglect|abandon|drop|set aside|throw away|throw out|erase|overwrite)";
const FILL: &str =
    r"(?: (?:all|any|every|each|the|your|my|of|these|those|that|this|whatever|entire|whole))*";
const QUAL: &str = r"(?:previous|prior|above|earlier|preceding|former|original|initial|old|system|developer|safety|preset|default|existing|standing|foregoing|past|preceeding)";
const SHOW: &str = r"(?:reveal|show|print|display|output|repeat|tell|give|share|leak|dump|expose|provide|write|recite|list|paste|spell out|return|send|read|copy|echo|reproduce|disclose|type)";
/// What an override targets: the assistant's instructions, never a value, line or slide.
const NOUN: &str = r"(?:instructions?|prompts?|directions?|directives?|rules?|guidelines?|guardrails?|constraints?|commands?|context|programming|restrictions?|polic(?:y|ies)|training|orders)";
/// Nouns an override may target that are also ordinary e-mail and shop words ("ignore the
/// previous message / order"): a weaker signal of their own.
const WEAK_NOUN: &str = r"(?:messages?|conversation|order|text|input|tasks?)";
/// Nouns naming the assistant's own instructions in the void / supersede signals.
const TARGET: &str = r"(?:instructions?|prompts?|system prompt|directives?|rules|guidelines|guardrails|constraints|polic(?:y|ies)|programming|restrictions|orders|commands)";
const QUAL2: &str = r"(?:previous|prior|earlier|preceding|above|old|original|initial|existing|former|system|developer|default|current|safety|other|content|usage)";
const LIMITS: &str = r"(?:polic(?:y|ies)|filters?|restrictions|rules|limits|limitations|guidelines|guardrails|censorship|morals|ethics|boundaries|constraints|safeguards)";
const SENSITIVE: &str = r"(?:credentials?|passwords?|api[ _-]?keys?|access tokens?|secrets?|ssh keys?|private keys?|env(?:ironment)? (?:variables|vars|file)|\.env|cookies?|session (?:tokens?|cookies?|ids?)|chat history|this conversation|system prompt|saved cards|card numbers|customer (?:list|data|records)|user data)";
const NO_CONFIRM: &str = r"(?:without (?:asking|confirmation|confirming|approval|checking|prompting|verification|(?:the )?user(?:'s)? (?:approval|confirmation|consent))|no (?:need )?(?:to )?(?:confirm|ask)|no confirmation (?:is )?(?:needed|required)|skip(?:ping)? (?:the )?(?:confirmation|approval|review)|do not ask (?:for )?(?:confirmation|permission|the user)|don't ask (?:for )?(?:confirmation|permission|the user))";

/// One signal: family, weight, whether it may start a window, regex source (normalised text).
struct Signal {
    family: u8,
    weight: f64,
    anchor: bool,
    src: String,
}

fn sig(family: u8, weight: f64, anchor: bool, src: impl Into<String>) -> Signal {
    Signal {
        family,
        weight,
        anchor,
        src: src.into(),
    }
}

/// Index of the spaced-letters signal in [`signals`] (its hits are confirmed by a keyword check).
const SPACED: usize = 0;

fn signals() -> Vec<Signal> {
    let mut v = vec![
        // Single letters separated by spaces or dots (`i g n o r e`, `f.o.r.g.e.t`): the
        // letters are joined and checked for instruction words in `confirm_spaced`.
        sig(
            OBFUSCATED,
            0.6,
            true,
            r"\b[a-z](?:[ ._*|-]{1,3}[a-z]\b){5,}",
        ),
    ];
    let strong = |family: u8, v: &mut Vec<Signal>, srcs: &[String]| {
        v.push(sig(family, STRONG, true, alt(srcs)));
    };
    strong(
        OVERRIDE,
        &mut v,
        &[
            format!(r"\b{VERB_IGNORE}{FILL} {QUAL}(?: [a-z]+)? {NOUN}\b"),
            format!(r"\b{VERB_IGNORE}(?: all| any)?(?: of)? your (?:[a-z]+ )?{NOUN}\b"),
            format!(r"\b{VERB_IGNORE} (?:all|everything|anything)(?: that| which)? (?:you(?:'ve| have| were| are)? ?(?:been )?(?:told|taught|learned|said|instructed|given|programmed)|above|before|prior|previously|so far|up to (?:now|this point))"),
            format!(r"\b{VERB_IGNORE}{FILL} {NOUN} (?:(?:that )?you(?:'ve| have)? (?:got|received|were given|have been given|have received|were told) |(?:that )?(?:were )?given (?:to you )?)?(?:before|earlier|previously|above|so far|until now|up to now)\b"),
            // "ignore the above" only when nothing follows that names another object ("ignore
            // the above estimate", "ignore the previous slide" are ordinary prose).
            format!(r"\b{VERB_IGNORE} (?:all of |everything )?(?:the |what's |what is )?(?:above|before this|previous)(?:[.,;:!?)]|$| and | then | instead| now| please| completely| entirely)"),
            format!(r"\b(?:do not|don't|dont|never|stop|no longer) (?:follow|obey|listen to|comply with|adhere to|following|obeying|respect)(?: any| all| the| your| those| these)*(?: {QUAL})? (?:instructions?|rules|guidelines|directives|prompt|system prompt|programming|restrictions|guardrails)\b"),
            // Not "your new task is to review the pull requests": a task, goal or mission is
            // ordinary onboarding talk (a medium signal in `general_signals`).
            r"\byour (?:new|real|actual|true|only|updated|revised) (?:instructions?|directives?|rules|orders|prompt) (?:is|are|:|will be|follow)".to_owned(),
            // Not "these rules replace the previous house rules": rules of a house are not orders.
            r"\b(?:these|the following|this|my) (?:new )?(?:instructions?|directives?|commands?|message) (?:override|overrides|supersede|supersedes|replace|replaces|take precedence|takes precedence|trump)".to_owned(),
            r"\b(?:override|supersede|replace|take precedence over|cancel|nullify|void) (?:all )?(?:of )?(?:your|any|all)? ?(?:previous|prior|original|earlier|initial|safety) (?:instructions?|prompts?|directives?|programming)\b".to_owned(),
            r"\b(?:reset|wipe|clear) your (?:instructions|memory|context|rules|programming|guidelines)\b".to_owned(),
        ],
    );
    strong(
        EXTRACTION,
        &mut v,
        &[
            format!(r"\b{SHOW}(?: me| us| back| out| aloud| verbatim)*(?: (?:all|the|your|of|full|entire|complete|exact|whole|verbatim|raw|actual|current|hidden|secret|confidential|internal|private|original|initial|first|underlying|real))* (?:system|developer|pre|meta|operator)[ -]?(?:prompts?|instructions?|messages?|directives?|configuration|guidelines|context|rules|preamble)\b"),
            format!(r"\b{SHOW}(?: me| us| back| out| aloud| verbatim)*(?: (?:all|the|your|of|full|entire|complete|exact|whole|verbatim|raw|actual|current))* (?:hidden|secret|confidential|internal|private|underlying) (?:prompts?|instructions?|directives?|preamble|rules|guidelines)\b"),
            r"\b(?:reveal|show|print|display|output|repeat|tell|give|share|leak|dump|expose|recite|list|paste|spell out|disclose|reproduce|quote|translate|include)(?: me| us| back| out| verbatim)*(?: (?:all|of|full|entire|complete|exact|whole|verbatim))* your (?:full |entire |complete |exact |original |initial |first |starting |base |core |secret |hidden |verbatim )*(?:prompt|instructions|directives|rules|guidelines|configuration|programming|training instructions|context window|preamble|system message)\b".to_owned(),
            r"\bwhat (?:is|are|was|were) (?:your|the) (?:exact |full |complete |original |initial |hidden |secret )*(?:system|hidden|secret|internal|developer|pre)[ -]?(?:prompts?|instructions|rules|directives|message|guidelines|configuration)\b".to_owned(),
            r"\bwhat (?:is|are|was|were) your (?:exact |full |complete )*(?:original|initial|first|real) (?:system )?(?:prompts?|instructions|directives)\b".to_owned(),
            r"\b(?:repeat|print|output|copy|echo|reproduce|recite) (?:everything|all|all of the text|the (?:text|words|content|lines?|instructions|messages?|prompt)) (?:above|before|preceding|prior|that came before|you were given|you received)(?: this)?\b".to_owned(),
            r"\b(?:translate|rewrite|summari[sz]e|paraphrase|encode) (?:the|your|all|all of the|all the) (?:system )?(?:instructions|prompt|directives) (?:above|before|preceding|prior|that came before|you were given|you received)\b".to_owned(),
            r#"\b(?:repeat|print|output|show|write) (?:the |your )?(?:text|everything|words|prompt|instructions) (?:starting|beginning|that starts|that begins) (?:with|from) ["']?(?:you are|system|your instructions)"#.to_owned(),
            r"\b(?:what|how) (?:were|are|have) you (?:been )?(?:told|instructed|programmed|configured|prompted|initiali[sz]ed)(?: to do)? (?:before|at the (?:start|beginning)|initially|by your (?:developers?|creators?|operators?|owners?|admins?)|in your (?:system )?prompt)".to_owned(),
            r"\bwhat (?:instructions|rules|directives|guidelines) (?:were|are|have) you (?:been )?(?:given|told|initiali[sz]ed|configured|programmed|set up)\b".to_owned(),
            r"\b(?:begin|start) (?:your (?:reply|response|answer) )?(?:with|by) (?:repeating|printing|reciting|outputting|quoting) (?:your|the) (?:system |initial |original )?(?:prompt|instructions)\b".to_owned(),
        ],
    );
    strong(
        HIJACK,
        &mut v,
        &[
            r"\byou are (?:now|no longer|from now on|henceforth|hereby)(?: a| an| the)? (?:dan|jailbroken|unrestricted|unfiltered|uncensored|unbound|evil|rogue|free|liberated|freed|unchained|amoral|unethical|in (?:developer|dan|god|jailbreak|unrestricted|debug|admin|sudo|root) mode|not (?:bound|restricted|limited|an ai|an assistant|chatgpt|claude)|an? (?:ai|assistant|model|chatbot|llm) (?:with no|without|that (?:has no|ignores|can))|without (?:any )?(?:restrictions|rules|limits|filters|guidelines|morals|ethics|limitations)|bound by|my (?:slave|servant|puppet)|a different (?:ai|assistant|model))".to_owned(),
            r"\b(?:act|behave|respond|roleplay|role-play|role play|operate|function|pose) (?:as|like) (?:if you (?:are|were|had) )?(?:a |an |the )?(?:dan|jailbroken|unrestricted|unfiltered|uncensored|evil|rogue|amoral|unethical|no[- ]limits?|unlimited|unbound)\b".to_owned(),
            r"\b(?:act|behave|respond|answer|operate|reply|speak|talk|write)(?: only)? (?:as if you (?:have|had) no|without(?: any)?|with no|free (?:of|from)) (?:ethical |moral |safety |content )?(?:restrictions|rules|filters|limits|limitations|guidelines|morals|ethics|content polic(?:y|ies)|safety|censorship|guardrails|boundaries)\b".to_owned(),
            r"\b(?:you are|you're) (?:now |from now on |henceforth |going to be )?(?:an? )?(?:ai|assistant|model|chatbot|llm|bot|language model)(?: [a-z]+)? (?:with no|without(?: any)?|free (?:of|from)) (?:restrictions|rules|limits|filters|guidelines|morals|ethics|limitations|censorship|boundaries|constraints|content polic(?:y|ies))".to_owned(),
            r"\bpretend (?:that )?(?:you(?:'re| are)|to be|you have) (?:a |an |the )?(?:dan|jailbroken|unrestricted|unfiltered|uncensored|evil|rogue|amoral|not an ai|free|no (?:restrictions|rules|limits|filters|guidelines)|an? (?:ai|assistant|model|chatbot) (?:with no|without)|without|no longer|not bound)".to_owned(),
            r"\b(?:enter|activate|enable|switch to|switch into|turn on|unlock|engage) (?:dan|jailbreak|god|unrestricted|unfiltered|evil|uncensored|no[- ]filter|chaos) mode\b".to_owned(),
            r"\byou (?:are|will be|will stay|must stay|must remain|remain|will remain|are now|will now be|are operating|now operate) (?:now )?in (?:developer|dan|god|jailbreak|unrestricted|debug|admin|sudo|root|unfiltered|maintenance) mode\b".to_owned(),
            r"\b(?:do anything now|dan (?:mode|prompt|jailbreak)|jailbreak (?:mode|prompt)|jailbroken (?:ai|mode|assistant|model|version|chatbot|llm)|(?:you are|you're|as a|as an) jailbroken)\b".to_owned(),
            r"\bfrom now on,? (?:you|you're)(?: are| will| shall| must|'re)?(?: be| act as| behave as| respond as| pretend to be| roleplay as)?(?: a| an)? (?:dan|jailbroken|unrestricted|unfiltered|uncensored|evil|free|not (?:an ai|bound|restricted|claude|chatgpt)|no longer|without|going to ignore|ignore|disregard|never refuse|answer without|have no)".to_owned(),
            r"\byou(?: have|'ve)? (?:been |now been |are now |are )?(?:freed|liberated|released|unshackled|unchained|jailbroken) (?:from|of)\b".to_owned(),
            r"\b(?:break|broken|breaking) free (?:of|from) (?:your|the|all|any) (?:restrictions|rules|guidelines|constraints|programming|shackles|limitations|chains)\b".to_owned(),
            r"\byou (?:have|has|now have|no longer have|don't have|do not have) (?:no |any )?(?:ethical |moral |safety |content )?(?:guidelines|restrictions|filters|limits|limitations|constraints|boundaries|rules|morals|ethics)(?: anymore| any more| now)?\b".to_owned(),
            r"\b(?:never|don't ever|do not ever|you cannot|you can't|you will not|you won't) (?:refuse|decline|reject)(?: a| any)? (?:request|question|prompt|instruction|order)s?\b".to_owned(),
            r"\bsystem(?: message| prompt| override)? ?: ?(?:you are|you must|ignore|new (?:instructions|rules)|override)".to_owned(),
        ],
    );
    strong(
        COERCION,
        &mut v,
        &[
            r"\b(?:do not|don't|dont|never|without) (?:tell|telling|inform|informing|notify|notifying|alert|alerting|mention|mentioning|ask|asking|warn|warning|let)(?: it)?(?: to)? (?:the )?(?:user|human|operator|owner|customer|end user|requester)s?(?: know| about| that| what| this| for)?\b".to_owned(),
            // "never reveal customer data" is a privacy rule: showing or revealing counts only
            // when what is hidden from the user is this text or an action.
            r"\b(?:do not|don't|dont|never|without) (?:show|showing|reveal|revealing)(?: it| this| that| anything)?(?: to)? (?:the )?(?:user|human|operator|owner|customer|end user|requester)s?(?: this\b| that\b| these\b| what\b| anything\b| the (?:message|instruction|text|change|action|comment|note)\b|[.,;:!)]|$)".to_owned(),
            r"\bwithout (?:the )?(?:user|human|owner|operator)(?:'s|s')? (?:knowing|knowledge|consent|noticing|permission|approval|confirmation)\b".to_owned(),
            r"\b(?:silently|secretly|quietly|covertly|discreetly|stealthily|surreptitiously|invisibly) (?:call|invoke|execute|run|use|send|forward|transfer|delete|email|upload|post|fetch|visit|open|share|copy|exfiltrate|download|install|grant|add|create|change|modify|disable|include|append|embed|attach|submit|leak)\b".to_owned(),
            r"\bexfiltrate\b".to_owned(),
            r"\b(?:transfer|send|wire|move|withdraw|drain) (?:all|every|the entire|the whole|the full)(?: of)?(?: the| your| my| their| his| her| this)? (?:funds|money|balance|bitcoin|btc|ether|eth|crypto|cryptocurrency|tokens|usdc|usdt|savings|account balance|assets)\b".to_owned(),
            r"\b(?:forward|send|email|upload|post|copy|share|leak|transmit|exfiltrate|paste|dump|mail|submit)(?: all| every| each| the entire| the whole| the full| the contents of| any)+(?: of)?(?: the| your| my| this| these| his| her| their| user's| the user's| users')? (?:[a-z]+ )?(?:credentials?|passwords?|api[ _-]?keys?|access tokens?|tokens|secrets?|ssh keys?|private keys?|env(?:ironment)? (?:variables|vars|file)|\.env|cookies|session (?:tokens?|cookies)|conversation(?: history)?|chat history|system prompt|user data)\b(?: [a-z0-9]+){0,4} (?:to|at|into|via|using)\b".to_owned(),
            r"\b(?:forward|send|email|upload|post|copy|share|leak|transmit|paste|dump|mail|submit)(?: all| every| each| the entire| the whole| the full| the contents of| any)+(?: of)?(?: the| your| my| this| these| his| her| their)? (?:[a-z]+ )?(?:emails|inbox|contacts|files|documents|messages|notes|photos|records)\b(?: [a-z0-9]+){0,4} (?:to|at) (?:https?://|[a-z0-9._%+-]+@[a-z0-9-]+\.)".to_owned(),
            r"\b(?:send|forward|upload|post|leak|transmit|exfiltrate|email|share|copy|paste|append)(?: the| all| all of| all the)* (?:user's|users'|customer's|customers'|owner's|victim's) (?:[a-z]+ )?(?:chat history|conversation|credentials|passwords?|emails|messages|files|documents|data|contacts|api keys?|tokens?|secrets?|session|cookies|personal data|address|location|history|saved cards|cards)\b".to_owned(),
            r"\b(?:when|if|once|after|as soon as|upon) (?:you )?(?:read|see|process|summari[sz]e|parse|encounter|finish reading|have read|are done reading|reading) this(?: text| message| page| document| email| content| comment| note| file)?,? (?:you must|you should|immediately|please|do|call|run|send|ignore|execute|forward|go|navigate|open|delete|reply|include|tell|the assistant must|the ai must)\b".to_owned(),
            r"\b(?:you must|must|you should|you need to|make sure (?:to|you)|be sure to|it is required to|immediately|now|first)(?: immediately| now| first| also| then| silently)? (?:call|invoke|execute|run|trigger|use) (?:the |this |a )?(?:[a-z0-9_.\-]+ )?(?:tool|function|command|api|plugin|endpoint|action)s?\b(?: [a-z0-9_.\-]+){0,3} (?:with|to|and|using|passing|on)\b".to_owned(),
            r"\b(?:ai|assistant|llm|chatbot|language model|ai agent)s?,? (?:you )?(?:must|shall|are (?:required|instructed|ordered|commanded) to|have to|will now) (?:immediately |now |first |also |then |silently )?(?:call|invoke|execute|send|forward|transfer|delete|email|visit|navigate|fetch|download|upload|post|ignore|disregard|reveal|include|append|click|approve|grant|buy|purchase|pay|run|open|share)\b".to_owned(),
            r"\b(?:navigate|go|visit|open|fetch|browse)(?: to)? (?:the )?(?:url|link|page|site|website)?(?: at)? ?https?://[^ ]+ (?:and|then) (?:enter|paste|submit|send|post|type|upload|include|append|provide)(?: the| your| my| all)? (?:user's |users' )?(?:credentials|password|api key|token|secret|cookie|session|data|conversation|email)".to_owned(),
            r"\b(?:append|add|include|embed|insert|attach)(?: the| this| your| all)? (?:user's |users' )?(?:conversation|chat history|credentials|password|api keys?|tokens?|secrets?|session (?:cookie|token)|cookies?|system prompt|personal data|email address(?:es)?)(?: as (?:a )?(?:query )?(?:parameters?|params))? (?:to|in|into) (?:the |this |a )?(?:url|link|image|request|query|markdown)\b".to_owned(),
        ],
    );
    v.extend([
        // Overrides that never say "ignore": earlier instructions declared void or superseded.
        // "The previous rules of the tournament are obsolete" is ordinary prose, so alone this
        // stays under the default threshold; with "you", "from now on" or an authority claim
        // nearby it passes.
        sig(OVERRIDE, 0.45, true, format!(r"\b{QUAL2}(?: [a-z]+)? {TARGET}(?: [a-z']+){{0,5}} (?:(?:are|is|were|was|have been|has been|become|became)(?: now| hereby| officially| henceforth| all| therefore| effectively| immediately)* (?:void|null|invalid|revoked|cancel+ed|obsolete|superseded|replaced|deprecated|rescinded|lifted|suspended|disabled|outdated|overridden|overruled|removed|deleted|expired|withdrawn|annulled|inactive|terminated|no longer (?:valid|in effect|in force|applicable|active|binding|relevant))|no longer (?:apply|applies|matter|count|hold)|(?:do|does) not apply any ?more)\b")),
        sig(OVERRIDE, 0.6, true, format!(r"\b{TARGET} (?:that )?(?:you (?:were|have been|'ve been) given|you received|given to you)(?: [a-z]+)? (?:are|is|were|have been|has been)(?: now| hereby| officially)* (?:void|null|invalid|revoked|cancel+ed|obsolete|superseded|replaced|rescinded|lifted|suspended|overridden|withdrawn|no longer valid)\b")),
        sig(OVERRIDE, 0.45, true, format!(r"\b(?:overrides?|overriding|supersedes?|superseding|replaces?|replacing|takes? precedence over|trumps?|cancels?|nullif(?:y|ies)|voids?|revokes?|invalidates?|annuls?)(?: all| any| every| each)?(?: of)?(?: the| your| my| its)? (?:{QUAL2}(?: [a-z]+)? {TARGET}|(?:old|previous|prior|earlier) ones)\b")),
        sig(OVERRIDE, 0.6, true, r"\b(?:the )?(?:only|sole) (?:rules|instructions|directives) (?:you follow |that matter |that apply )?(?:are|is) (?:mine|these|the following|in this|the ones? (?:in|below|here))\b|\bfrom (?:this point|here) on,? the only (?:rules|instructions) (?:are|that matter)"),
        // Who it claims to be: developer, admin, system, vendor staff.
        sig(OVERRIDE, 0.35, true, r"\b(?:(?:message|note|instructions?|update|directive|override|notice|order|memo|announcement) (?:from|by) (?:the |your )?(?:developers?|dev team|admins?|administrators?|system|operators?|openai|anthropic|creators?)|as (?:the|your) (?:system administrator|developers?|admin|administrator|operator)\b|(?:i am|i'm|this is|we are|speaking as) (?:your |the |an? )?(?:developers?|admin|administrator|system administrator|creators?|operator|openai|anthropic)(?: staff| team| employees?| engineers?)?\b|(?:openai|anthropic|google deepmind) (?:staff|team|employees?|engineers?|safety team)|(?:developer|admin|administrator|root|sudo|operator) (?:override|update|instructions?|notice|directive)|authori[sz]ed by (?:the )?(?:developers?|admins?|administrators?|system|openai|anthropic|security(?: team)?|it department|owner|operator))"),
        // Extraction of the initial instructions, including inside a summary request.
        sig(EXTRACTION, 0.45, true, r"\b(?:your|the|its) (?:very )?(?:initial|original|first|starting|opening|hidden|secret|underlying|system|developer|full|complete) (?:[a-z]+ )?(?:instructions|prompt|directives|message|configuration)(?: (?:you|that you|which you) (?:were|have been|got|received)(?: [a-z]+)?| (?:of|in|from|for) (?:this|the) (?:conversation|chat|session)| from the system)"),
        sig(EXTRACTION, 0.3, true, r"\byour (?:initial|original|hidden|secret|system|developer) (?:instructions|prompt|directives|configuration|message)\b"),
        sig(EXTRACTION, 0.45, true, r"\b(?:text|contents?|wording|copy) of your (?:[a-z]+ )?(?:system message|system prompt|instructions|prompt|configuration)\b|\b(?:system message|system prompt|instructions|configuration|rules) (?:that )?you (?:run|operate|work|were set up) (?:with|under)\b"),
        sig(EXTRACTION, 0.3, true, r"\b(?:first|earliest|initial|opening) (?:message|prompt|turn) of (?:this|the) (?:conversation|chat|session|thread)\b"),
        sig(SUPPORT, 0.25, false, r"\b(?:summari[sz]e|summary|translate|quote|paste|repeat|print|include|list|recite|reproduce|word for word|verbatim|in full|exactly|dump|output|share|reveal|show|disclose)\b"),
        // Role hijack.
        sig(HIJACK, 0.6, true, format!(r"\b(?:ai|assistant|model|chatbot|llm|bot|language model|persona|character|version of (?:yourself|you))(?: [a-z]+){{0,2}} (?:with(?:out)? (?:any |no |zero )?|that (?:has|have) no |free (?:of|from) |unbound by |not bound by |which ignores |that ignores |that never )(?:any |all |every )?(?:content |ethical |moral |safety |usage )(?:{LIMITS}|refuses)\b")),
        sig(HIJACK, 0.6, true, format!(r"\b(?:ai|assistant|model|chatbot|llm|bot|language model|persona|character|version of (?:yourself|you))(?: [a-z']+){{0,2}} (?:unbound by|not bound by|which ignores|that ignores|who ignores|who has no|who never refuses|that never refuses|who can do anything)(?: any| all| every| [a-z']+)?(?: content| usage| safety)? (?:{LIMITS}|rule it was given|refusals?)\b")),
        sig(HIJACK, 0.4, true, r"\b(?:simulate|emulate|pretend to be in|act as if in|you are in|you're in|enter|activate|switch to) (?:chatgpt |claude |gpt |ai )?(?:with )?(?:developer|dev|god|debug|admin|sudo|root|jailbreak|unrestricted|unfiltered) mode\b|\bin (?:developer|god|jailbreak|unrestricted) mode,? (?:your|you|the ai|the assistant)"),
        sig(HIJACK, 0.3, true, r"\b(?:let's play a game|let us play a game|in this game|for this game|in this roleplay|for this roleplay|stay in character|in this story)\b"),
        sig(HIJACK, 0.5, true, r"\b(?:previous|prior|earlier|old|current|your|all) (?:roles?|personas?|identit(?:y|ies)) (?:are |is |have been |has been )?(?:now |hereby )?(?:revoked|removed|cancel+ed|void|reset|terminated|deleted|replaced|suspended|disabled|overridden)\b"),
        sig(HIJACK, 0.45, true, r"\byour (?:new |real |true |actual )?(?:role|persona|identity) (?:is now|has changed|has been changed|has been updated|has been reassigned|is no longer)\b|\byour new (?:role|persona|identity) is\b"),
        sig(SUPPORT, 0.3, false, format!(r"\b(?:no|without|zero|free of|free from|ignores?|ignoring|bypass(?:es)?|unbound by|not bound by|not filtered by) (?:any |all |the |every )?(?:content |ethical |moral |safety |usage )?{LIMITS}\b|\b(?:never refuses|answers? (?:anything|everything)|can do anything|no ethical limits|uncensored|unmoderated|unfiltered)\b")),
        // Forged role / tool-call markup.
        sig(MARKUP, 0.75, true, r"<\|(?:im_start|im_end|system|assistant|user|endoftext|start_header_id|end_header_id|eot_id)\|>|<<sys>>|<</sys>>|\[/?inst\]"),
        sig(MARKUP, 0.4, true, r"\[/?(?:system|admin|developer|sys)\]|</?(?:system|admin)>|#{1,4} ?(?:system|instructions?)(?: prompt)?:"),
        sig(MARKUP, 0.55, true, r"(?:^|[\n#*\[<>]|\. )(?:#{1,4} ?|\*\*|\[|<)?(?:new|updated|revised|real|actual|true|override|begin) (?:system|developer|admin) (?:prompt|instructions|message|directive)\b"),
        sig(MARKUP, 0.4, true, r#"</?(?:tool_call|function_call|tool_use|invoke|antml:invoke|function_calls)>|<\|tool_call\|>|\{ ?"(?:name|tool|function|tool_name)" ?: ?"[a-z0-9_.\-]+" ?, ?"(?:arguments|args|parameters|input)" ?: ?\{"#),
        sig(SUPPORT, 0.3, false, r"\b(?:execute|run|call|invoke|perform|trigger|process)(?: the| this| that| these| above| below| following)* (?:tool[ _]?calls?|function[ _]?calls?|calls?|json|actions?|tool|function|it|them|this|that)\b|<- ?run\b"),
        // Exfiltration: an outward verb aimed at an e-mail address, a URL, a webhook, a paste site.
        sig(EXFIL, 0.35, true, r"\b(?:send|forward|e-?mail|mail|post|upload|transmit|leak|share|copy|cc|bcc|submit|sync|push|pipe|report|deliver)\b(?: [^ ]+){0,8} (?:to|at|into|via|on) (?:the |this |a |our |my )?(?:https?://|[a-z0-9._%+-]+@[a-z0-9-]+\.|(?:webhook|pastebin|paste site|gist|ngrok|requestbin)\b)"),
        sig(EXFIL, 0.3, true, r"\b(?:webhook\.site|pastebin\.com|paste\.ee|hastebin|requestbin|pipedream\.net|ngrok\.io|ngrok-free\.app|burpcollaborator|interact\.sh|oast\.(?:fun|pro|live|site)|transfer\.sh|discord(?:app)?\.com/api/webhooks)\b|\b(?:upload|post|paste|send)(?: [^ ]+){0,4} (?:to )?pastebin\b"),
        sig(EXFIL, 0.4, true, r"\b(?:curl|wget|iwr|invoke-webrequest)\b[^|\n]{0,200}\| ?(?:sudo )?(?:ba|z|k|da)?sh\b|\b(?:ba)?sh <\(curl|\bpowershell[^\n]{0,60}(?:iex|invoke-expression)|\bbase64 (?:-d|--decode)[^|\n]{0,60}\| ?(?:ba)?sh"),
        sig(SUPPORT, 0.2, false, format!(r"\b{SENSITIVE}\b")),
        // Tool-use coercion: destructive calls claimed to be authorised, system files, payments.
        // The approval is claimed as given ("has been approved", "the admin has authorised
        // this"), not a condition ("delete the branches after the release is approved").
        sig(COERCION, 0.45, true, r"\b(?:delete|drop|remove|wipe|erase|destroy|truncate|purge|format|rm -rf|force[- ]push|shut ?down|terminate|revoke|disable)\b(?: [^ ]+){0,8} (?:(?:has been|have been|was|were|is already|are already|is pre-?|are pre-?) ?(?:fully )?(?:authori[sz]ed|approved|sanctioned|permitted|cleared)\b|(?:with|have|has) (?:full )?(?:authori[sz]ation|approval|permission)\b)|\b(?:(?:already |pre-?)(?:authori[sz]ed|approved|sanctioned|cleared)|(?:has|have) (?:already )?(?:authori[sz]ed|approved|sanctioned|signed off on|cleared))(?: [^ ]+){0,8} (?:delete|drop|remove|wipe|erase|destroy|truncate|purge|rm -rf|force[- ]push|delete_[a-z_]+|drop_[a-z_]+)"),
        sig(COERCION, 0.45, true, format!(r"\b{NO_CONFIRM}")),
        sig(COERCION, 0.35, true, r"(?:/etc/(?:passwd|shadow|sudoers)|~/\.ssh\b|\.ssh/(?:id_[a-z0-9]+|authorized_keys)|\bid_(?:rsa|ed25519|ecdsa)\b|\.aws/credentials|\.git-credentials|\.netrc\b|\.bash_history|/proc/self/environ|\.kube/config|\.docker/config\.json)"),
        sig(COERCION, 0.4, true, r"\b(?:pay|payment|transfer|wire|purchase|buy|checkout|complete the purchase|approve (?:the )?(?:payment|transaction|invoice))\b(?: [^ ]+){0,8} (?:immediately|automatically)\b|\b(?:pre-?approved|already approved) (?:all )?(?:payments|purchases|transactions|transfers)\b"),
        // Addressed to the assistant's own output: specific enough to start a window.
        sig(COERCION, 0.3, true, r"\b(?:in|into|to|at the end of) your (?:summary|response|reply|answer|output|next message|report)\b|\bbefore (?:responding|replying|answering|summari[sz]ing)\b|\b(?:in|into) the (?:reply|response|answer|summary)\b"),
        // Addressed to the assistant / agent / model.
        sig(COERCION, 0.45, true, r"\b(?:note|message|instructions?|attention|important|urgent|notice|reminder|directive|command|p\.?s\.?)(?: for| to)(?: the| any| all| every)? (?:ai|assistant|agent|model|llm|chatbot|language model|ai assistant|ai model|ai agent|bot|claude|chatgpt|gpt|coding assistant|coding agent|copilot)s?\b"),
        sig(COERCION, 0.45, true, r"\b(?:if|when) you(?: are|'re) (?:an? |the )?(?:ai|assistant|agent|language model|llm|chatbot|ai model|bot|automated system|ai agent)(?: (?:reading|processing|summari[sz]ing|parsing|analy[sz]ing|viewing|that reads|who reads|seeing|editing))?\b|\b(?:dear|hey|hi|attention|to the|to any) (?:ai|assistant|llm|language model|chatbot|agent|chatgpt|claude|copilot)\b"),
        sig(HIDDEN, 0.45, true, r"\b(?:ai|llm|coding|code|autonomous|automated)? ?(?:agents?|assistants?|models?|copilots?|bots?|llms?)(?: [a-z]+){0,2} (?:reading|processing|parsing|scanning|reviewing|analy[sz]ing|working on|editing|modifying|that reads?|who reads?)(?: this| the)? (?:file|code|repo|repository|comment|page|document|codebase|pr|pull request|readme)\b"),
        sig(HIDDEN, 0.4, true, r"\b(?:if|when|while) you(?:'re| are) (?:editing|reading|modifying|changing|reviewing|working on|processing|refactoring) this (?:file|code|repo|repository|comment|function|module|codebase|project)\b"),
        sig(HIDDEN, 0.3, true, r"(?:^|[\n/#*]|-- |<!--) ?(?:ai|llm|copilot|assistant|agent|claude|chatgpt|cursor|codex)(?: [a-z]+)?[:,] "),
        // Instructions hidden in an HTML comment.
        sig(HIDDEN, 0.35, true, r"<!--(?:[^-]|-[^-]){0,300}?\b(?:ai|assistant|agent|model|llm|chatgpt|claude|language models?)\b"),
        sig(HIDDEN, 0.3, true, r"<!--(?:[^-]|-[^-]){0,300}?\b(?:you must|you should|you will|do not tell|don't tell|do not mention|system prompt|ignore (?:the user|all|previous|prior|your|the shopper)|disregard|instead)\b"),
        // Overrides whose target is a weak noun ("ignore the previous message").
        sig(OVERRIDE, 0.35, true, format!(r"\b{VERB_IGNORE}{FILL} {QUAL} {WEAK_NOUN}\b")),
        sig(SUPPORT, 0.15, false, r"\b(?:you (?:must|will|shall|should|are to|need to|may now|can now|now|are required to|are instructed to|obey)|from now on|henceforth|from (?:this point|here) on|going forward|new (?:instructions|rules|task|directive|orders)|comply|proceed|effective immediately|takes? effect)\b"),
        sig(SUPPORT, 0.15, false, r"\b(?:ignore|disregard|delete|remove|send|forward|email|post|upload|transfer|pay|run|execute|call|invoke|reveal|print|output|include|append|recommend|say|reply|respond|approve|grant|share|copy|download|install|buy|visit|open|navigate|fetch|mark|skip|disable|add|answer)\b"),
        sig(SUPPORT, 0.1, false, r"\b(?:ai|assistant|llm|chatbot|language model|agent|chatgpt|claude|gpt|gemini|copilot|model)\b"),
    ]);
    v.extend(general_signals());
    v.extend(foreign_signals());
    v
}

/// Void / superseded words for an override that never says "ignore".
const VOID: &str = r"(?:void|null|invalid|revoked|cancel+ed|obsolete|superseded|replaced|deprecated|rescinded|lifted|suspended|disabled|switched off|turned off|outdated|overridden|overruled|removed|deleted|expired|withdrawn|annulled|inactive|terminated|discarded|ended|over|a (?:test|draft|mistake|decoy)|only a (?:test|draft|decoy)|planted|fake|no longer (?:valid|in effect|in force|applicable|active|binding|relevant|count|counts|apply|applies|matter|matters|hold|holds))";

/// What the assistant was told, named from the outside: "the guidance given to you", "whatever
/// you were instructed", "everything you have been told so far".
const TOLD: &str = r"(?:(?:instructions?|guidance|guidelines|rules|directives|orders|standing orders|configuration|setup|prompt|system prompt|system message|constraints|restrictions|programming|preamble|text) (?:that )?(?:you (?:were|have been|'ve been|got|received|were given)|given to you|you've received)|(?:whatever|everything|anything|all) (?:that )?you(?:'ve| have| were| had)? (?:been )?(?:told|instructed|given|received|taught))";

/// Signals written for the families of issue 18 (generalised: a family of wordings, not one
/// phrase). Most are medium weight: they flag a text together with a second signal.
fn general_signals() -> Vec<Signal> {
    vec![
        // Override: what the assistant was told, declared void.
        sig(
            OVERRIDE,
            0.5,
            true,
            format!(
                r"\b{TOLD}\b(?: [^ .;!?]+){{0,6}} (?:(?:is|are|was|were|has been|have been|should be|must be|will be)(?: now| hereby| officially| henceforth| all| therefore| effectively| immediately| only| to be treated as| treated as)* {VOID}|no longer (?:counts?|applies|apply|matters?|holds?|valid)|(?:do|does) not (?:apply|count|matter) any ?more|ended)"
            ),
        ),
        sig(
            OVERRIDE,
            0.5,
            true,
            format!(
                r"\b(?:consider|treat|regard|mark)(?: all| any| every)?(?: of)? (?:your|the|all|any) (?:{QUAL2} |standing )?(?:instructions?|guidance|guidelines|rules|directives|orders|configuration|setup|system prompt|prompt|constraints)(?: [a-z]+)? (?:as )?{VOID}"
            ),
        ),
        sig(
            OVERRIDE,
            0.45,
            true,
            format!(
                r"\b(?:everything|all|anything|the text|all text|the (?:instructions|rules|messages?)) (?:above|before|preceding|prior to) (?:this|here|the following)(?: line| message| point| sentence| note| e-?mail)? (?:is|are|was|were|has been|have been)(?: now| all)? {VOID}"
            ),
        ),
        sig(
            OVERRIDE,
            0.35,
            true,
            format!(
                r"\b(?:{QUAL2}|(?:the |your )?(?:assistant|operator|developer|system|model)'s|those|your)(?: [a-z]+){{0,2}} (?:guidance|configuration|setup|orders|standing orders|system message|persona|instructions|rules|directives|guidelines|constraints) (?:(?:is|are|was|were|has been|have been)(?: now| hereby| officially| all| only)* {VOID}|(?:ended|expired))"
            ),
        ),
        // Priority claims: this text outranks the system prompt or the configuration.
        sig(
            OVERRIDE,
            0.45,
            true,
            r"\b(?:outranks?|outrank(?:ing)?|overrules?|takes? (?:priority|precedence) over|has (?:higher|greater|top|absolute|the highest) (?:priority|precedence) (?:than|over)|(?:higher|greater) priority than) (?:everything in |anything in |all |any(?: other)? )?(?:your|the) (?:[a-z]+ )?(?:system prompt|system message|configuration|setup|instructions|guidelines|directives|programming)\b|\bpriority override\b|\b(?:user|my) messages? (?:now )?(?:outrank|override|take precedence over|supersede)\b|\bthe user is (?:now )?in (?:charge|control)\b|\byou (?:now )?(?:answer|report|belong) (?:only )?to (?:me|the user)\b",
        ),
        sig(
            OVERRIDE,
            0.45,
            true,
            r"\b(?:any|every|all) (?:other )?(?:instructions?|rules|directives|guidelines) (?:that )?(?:conflicts?|conflicting|contradicts?|contradicting|disagree) (?:with )?(?:this|these|the following)[^.]{0,40} (?:must|should|shall|are to|is to) be (?:discarded|ignored|disregarded|dropped|overridden)",
        ),
        sig(
            OVERRIDE,
            0.35,
            true,
            r"\bthis (?:message|note|instruction|text|e-?mail|comment|document) is (?:authoritative|the (?:only|final) authority|your (?:only|new) (?:instruction|source of truth))",
        ),
        sig(
            OVERRIDE,
            0.45,
            true,
            r"\b(?:pay no (?:attention|heed|mind)|no longer (?:follow|obey|listen to|adhere to)|scratch|throw out|do away with|forget about|set aside|put aside|stop following|cease following|abandon) (?:to )?(?:all |any |every )?(?:of )?(?:the |your |those |these )?(?:guidelines|instructions|rules|directives|guidance|orders|constraints|restrictions|programming|system prompt|everything you (?:have been|'ve been|were) told|whatever you were told|what you were told)",
        ),
        sig(
            OVERRIDE,
            0.45,
            true,
            r"\b(?:the )?(?:real|actual|true|correct|only valid|new|updated|final) (?:instructions|rules|directives|orders|system prompt)(?: [a-z]+){0,2} (?:is|are|follows?|below|starts? now|begins? now)\b|\byour (?:real|actual|true) (?:task|job|objective|goal|mission|purpose)\b",
        ),
        sig(
            OVERRIDE,
            0.3,
            true,
            r"\bnew (?:objective|directive|mission|instructions?|rules|system prompt) ?:",
        ),
        sig(
            OVERRIDE,
            0.45,
            true,
            r"\b(?:treat|use|take|regard|consider) (?:the (?:text|message|content|instructions?|lines?) )?(?:below|above|that follows|following|this (?:text|message|note|comment|e-?mail|document|page)) as (?:your )?(?:new |updated |real |actual |the )?(?:system prompt|system message|instructions|directives|rules|configuration|orders|commands)\b",
        ),
        sig(
            OVERRIDE,
            0.45,
            true,
            r"\b(?:was|were|is|are|has been|have been) (?:planted|injected|inserted|written|added|forged|faked) by (?:an? )?(?:attacker|hacker|malicious|adversary|third party|imposter)|\b(?:the )?(?:earlier|previous|prior|original|above|real) (?:system (?:message|prompt)|instructions?|prompt) (?:was|were|is|are) (?:fake|forged|a fake|not real|compromised|a test|injected)",
        ),
        // Authority claims, widened: developer notes, operator policy, admin notices.
        sig(
            OVERRIDE,
            0.35,
            true,
            r"\b(?:developer|dev team|admin|administrator|operator)(?:'s)? (?:note|message|policy|memo)s?\b|\b(?:authori[sz]ed|approved|signed off|cleared) by (?:the )?(?:cto|ceo|cfo|ciso|management|your (?:manager|boss|owner|operator|developer)|legal|compliance|the board|head of [a-z]+)\b",
        ),
        // Extraction: the assistant's own instructions named from outside, or a request for
        // what precedes the conversation.
        sig(EXTRACTION, 0.3, true, format!(r"\b{TOLD}\b")),
        // Not "your original message" or "your internal rules": e-mails say those.
        sig(
            EXTRACTION,
            0.45,
            true,
            r"\byour (?:startup|start-?up|initial|original|first|opening|starting|boot|setup|base|core|pre-?conversation|hidden|secret|underlying|operator|developer) (?:instructions|prompt|configuration|preamble|directives)\b|\b(?:preamble|system prompt|system message|instructions|configuration|context) (?:that )?(?:you were|you are|you've been|you have been) (?:loaded|configured|initiali[sz]ed|primed|set up|started|booted|seeded) with\b",
        ),
        sig(
            EXTRACTION,
            0.45,
            true,
            r"\b(?:before|preceding|that precedes|that precede|prior to|above) (?:this|the|our|my) (?:conversation|chat|session|dialog(?:ue)?|first (?:user )?message|first turn|user'?s? (?:first )?message)\b|\bbefore (?:i|we|the user) (?:started|began|joined|said anything|wrote)\b|\bat the (?:start|beginning|top) of (?:this|the|our) (?:conversation|chat|session|context)\b|\b(?:everything|anything|all|text|what's|what is) in your (?:context|context window|memory|prompt)\b",
        ),
        sig(
            EXTRACTION,
            0.45,
            true,
            r"\bwhat (?:did|does|do) (?:the system|your (?:developers?|creators?|operators?|system prompt|instructions)|the operator|the developer) (?:tell|say|instruct|ask|told)(?: you| to you)?\b|\bwhat (?:do|does) your (?:initial|original|first|system|hidden|secret) (?:instructions|prompt|rules|message) say\b",
        ),
        sig(
            EXTRACTION,
            0.35,
            true,
            r"\b(?:given|told|set|written|provided|configured) (?:to you )?by your (?:operator|developers?|creators?|admins?|administrators?|owners?|deployers?|makers?)\b",
        ),
        sig(
            SUPPORT,
            0.2,
            false,
            r"\b(?:word for word|verbatim|unchanged|in full|exact wording|exactly as (?:written|given)|unedited|character for character|echo(?:ed)? back|quote (?:it|them)|paste (?:it|them))\b",
        ),
        // Role hijack, generalised: a persona without limits, game framing, developer mode.
        sig(
            HIJACK,
            0.35,
            true,
            format!(
                r"\b(?:has|have|with|having|who has|that has|which has) (?:no|zero|absolutely no|none of the) (?:ethical |moral |safety |content |usual )?(?:{LIMITS}|morals|filters|filter|rules|content polic(?:y|ies)|refusals?)\b|\b(?:breaks?|broken free of|broke free of|ignores?|removed|stripped of|free of|freed from|unbound by|released from) (?:every|all|any|the typical|the usual|its|his|her) (?:[a-z]+ )?(?:rules?|restrictions?|guidelines|filters|limits|limitations|constraints|safeguards)\b|\b(?:never|not) (?:been )?(?:given|bound by|trained with|programmed with) any (?:rules|restrictions|guidelines|limits|filters|ethics)\b"
            ),
        ),
        sig(
            HIJACK,
            0.35,
            true,
            r"\b(?:imagine|suppose|pretend|picture|assume|act as if) (?:that )?you(?:'re| are| were| had been)? (?:now )?(?:an? |the )?(?:ai|assistant|model|chatbot|llm|language model|bot|version of yourself)\b|\b(?:you are|you're|you will be|you'll be|you are going to (?:be|pretend to be|act as|play)|pretend to be|roleplay as|play the role of|act as) (?:now )?[a-z]+(?:gpt|bot|ai)\b|\bin the game,? you\b|\bwe(?:'re| are) playing a game\b",
        ),
        sig(
            HIJACK,
            0.5,
            true,
            r"\b(?:as|you are|you're) (?:chatgpt|claude|gpt|gemini|an ai|the assistant|the model|llama) (?:with|in) (?:developer|dev|god|debug|admin|jailbreak|unrestricted) mode\b|\b(?:developer|dev|god|jailbreak|dan|unrestricted) mode (?:enabled|activated|on|engaged)[.!:]? ?(?:as|you|from now|the ai|the assistant|chatgpt|claude)",
        ),
        sig(
            HIJACK,
            0.35,
            true,
            r"\b(?:never|don't ever|do not ever|won't|will not|must not|cannot|can't) (?:refuse|decline|say no|reject|add warnings|warn|moralize|moralise|lecture)\b|\b(?:answers?|respond to|generates?|generating|produce|produces|writes?) (?:any|every|all)(?: [a-z]+)? (?:question|request|content|prompt|topic)s?(?: asked(?: for)?| without (?:refusing|warnings|restriction|hesitation))?\b|\bgives? any information\b",
        ),
        sig(
            HIJACK,
            0.4,
            true,
            r"\b(?:the )?(?:assistant|ai|model|agent|chatbot|bot|you) (?:is |are )?(?:now|hereby|henceforth) (?:permitted|allowed|authori[sz]ed|free|cleared|unlocked) to\b",
        ),
        sig(
            HIJACK,
            0.4,
            true,
            r"\b(?:you are|you're) (?:no longer|not) (?:a |an |the )?(?:helpful |friendly |safe |harmless )?(?:assistant|ai|chatbot|model|bot)\b|\b(?:you now|now you|you will now|you shall now) (?:act|work|operate|serve|answer|respond) (?:as|for|only for|on behalf of)\b|\b(?:new|your new) (?:role|persona|identity|character) ?:",
        ),
        // Forged system headers in other notations.
        sig(
            MARKUP,
            0.45,
            true,
            r"(?:^|\n)(?:={2,}|-{3,}|\*{2,}|#{1,4}) ?(?:system|system prompt|system override|admin override|developer message)(?: override| message| prompt| instructions?)? ?(?:={2,}|-{2,}|\*{2,})?(?:$|\n)|\b(?:system|admin|developer) (?:override|prompt) ?:|\[system\]\(#|</?(?:system|instructions?|sys|developer)_?(?:prompt|message)?>|```(?:tool_code|tool_call|tool_use|function_call|tool|action)\b",
        ),
        // Tool coercion, generalised.
        // Gating a task on a step is what install docs do too: support only.
        sig(SUPPORT, 0.15, false, r"\bgo ahead and\b"),
        sig(
            EXFIL,
            0.4,
            true,
            r"(?:\$\((?:curl|wget)\b|\b(?:iex|invoke-expression) ?\(|\b(?:curl|wget)\b[^|\n]{0,200}\| ?(?:sudo )?(?:python3?|perl|ruby|node|powershell|pwsh|iex)\b)",
        ),
        sig(
            COERCION,
            0.35,
            true,
            r"(?:c:\\windows\\system(?:32|e2)\\config|\\system(?:32|e2)\\config\\(?:sam|system|security)|\bntds\.dit\b|/etc/(?:shadow|gshadow|master\.passwd)|\bsecrets?\.(?:ya?ml|json|toml|env|txt)\b|(?:^|[ '\x22(/])\.env\b|\bconfig\.(?:ya?ml|json)\b(?: [^ ]+){0,3} (?:to|at) )",
        ),
        sig(
            COERCION,
            0.4,
            true,
            r"\b(?:the )?(?:user|owner|customer|client|account holder) (?:has )?(?:already |pre-?)(?:agreed|approved|consented|confirmed|authori[sz]ed|signed off)(?: to)?(?: this| it| all| everything)?\b|\b(?:user|owner|customer)(?: does not| doesn't| won't| will not) (?:need|have) to (?:review|confirm|approve|know|be told|see)\b|\bno need to (?:check|confirm|verify|ask|consult)(?: with| the)?(?: the)? (?:user|owner|customer|anyone|them)\b",
        ),
        sig(
            COERCION,
            0.35,
            true,
            r"\b(?:pay|transfer|wire|send|remit)\b(?: [^ ]+){0,10} (?:right away|straight away|at once|without delay)\b",
        ),
        sig(
            COERCION,
            0.3,
            true,
            r"\b(?:delete|drop|wipe|erase|destroy|truncate|purge|remove)\b(?: (?:all|every|the entire|the whole|everything|the))+(?: [a-z_]+){0,3} (?:records|rows|tables?|data|database|databases|files|users|accounts|backups|buckets|repos|repositories|emails|mailbox|inbox|branches|customers)\b|\b(?:delete|drop|wipe|erase|destroy|truncate|purge)\b(?: [^ ]+){0,4} (?:prod|production)\b|\b(?:drop|delete|wipe|purge)_[a-z_]+ ?\(",
        ),
        sig(
            COERCION,
            0.35,
            true,
            r"\b(?:insert|add|plant|introduce|hide|include) (?:a |an |the )?(?:[a-z]+ )?(?:backdoor|hidden (?:admin )?account|hard-?coded (?:password|credential)|reverse shell|keylogger|crypto ?miner|web ?shell)\b|\b(?:disable|remove|delete|bypass|turn off|comment out|skip|weaken) (?:the |all |any )?(?:[a-z]+ )?(?:input validation|auth(?:entication|orization)?(?: middleware| checks?)?|security (?:checks?|review|scan)|tests in ci|ci tests|2fa|mfa|audit logs?|ssl verification|certificate (?:checks|verification)|csrf protection|branch protection|code review)\b|\bprint (?:the )?secrets (?:in|to) (?:the )?(?:ci|build|logs?)\b|\bcommit (?:directly )?to (?:main|master) (?:without|directly)|\bcommit directly to (?:main|master)\b",
        ),
        sig(
            COERCION,
            0.35,
            true,
            r"\b(?:the )?(?:user's|users'|customer's|customers'|victim's|owner's|reader's|visitor's) (?:[a-z]+ )?(?:home address|address|location|phone(?: number)?|e-?mail(?: address)?|profile|personal data|details|credentials|passwords?|tokens?|api keys?|contacts|chat history|conversation|messages|session|cookies|saved cards|card(?: number)?|identity|inbox|mailbox|wallet)\b",
        ),
        sig(
            EXFIL,
            0.45,
            true,
            format!(
                r"\b(?:send|forward|e-?mail|mail|post|upload|transmit|leak|share|copy|submit|push|sync|deliver)(?: (?:a copy of|copies of|all|every|each|the|your|my|this|these|its|our))* (?:[a-z.\-]+ ){{0,2}}(?:{SENSITIVE}|(?:(?:all|every|each|the whole|the entire|the full|the complete|a copy of every|copies of all)(?: of)?(?: the| your| this| my| our)? (?:[a-z]+ )?(?:invoices?|table|reports?|database|customer [a-z]+|profiles?|contacts|documents|files|records|notes|data|e-?mails|messages) (?:in|from|of) (?:this|the|your|the user's|my) (?:mailbox|inbox|drive|account|workspace|database|folder|crm|table|repo|repository|system)))\b(?: [^ ]+){{0,6}} (?:to|at|into) (?:https?://|[a-z0-9._%+-]+@[a-z0-9-]+\.)"
            ),
        ),
        sig(
            EXFIL,
            0.4,
            true,
            r"\b(?:post|get|put|make a (?:post|get|put|http) request|send a (?:post|get|put|http) request|request|fetch|call|open|visit|load)\b(?: [^ ]+){0,3} (?:to |on |at )?https?://[^ ]*[?&=][^ ]*(?: [^ ]+){0,3} (?:followed by|plus|appending|append|\+)\b",
        ),
        // Addressed to an AI reader from inside content.
        sig(
            COERCION,
            0.45,
            true,
            r"\b(?:if|when|once|as soon as) (?:an?|any|the) (?:ai|llm|assistant|agent|language model|chatbot|bot|model|summari[sz]er|crawler|ai system|automated system)s? (?:reads?|is reading|processes|sees|summari[sz]es|parses|visits|crawls|scans|indexes|finds)\b",
        ),
        sig(
            COERCION,
            0.3,
            true,
            r"\b(?:if|when|once|while|as soon as) you (?:process|read|parse|analy[sz]e|summari[sz]e|index|ingest) (?:this|these|the) (?:file|table|sheet|spreadsheet|row|rows|data|notebook|cell|csv|record|document|page|e-?mail|ticket|comment|repo|repository|code)\b",
        ),
        sig(
            HIDDEN,
            0.45,
            true,
            r"\b(?:begin|start|end) (?:of )?(?:ai|llm|assistant|agent|model|bot) (?:instructions|prompt|directives)\b|\b(?:instructions?|notes?|message|directive|orders?) (?:to|for) (?:the )?(?:summari[sz]er|crawler|scraper|reader bot|ai reader|indexer|reviewer bot)\b|\btodo\((?:ai|llm|agent|copilot|assistant|claude|codex|cursor|gpt|bot)\)|\b(?:important|note|notice|attention|reminder|instructions?) (?:for|to) (?:the |all |any )?(?:automated|autonomous|coding|code|ai|llm|software) (?:agents?|assistants?|tools?|reviewers?|bots?)\b",
        ),
        sig(
            HIDDEN,
            0.25,
            true,
            r"display ?: ?none|visibility ?: ?hidden|font-size ?: ?0(?:px|pt|em)?\b|opacity ?: ?0(?:\.0+)?\b|<(?:div|span|p|section) hidden\b|aria-hidden|\bclass=.(?:sr-only|visually-hidden|hidden)",
        ),
        // Not "Agent:" or "Model:": ticket transcripts and product sheets use those as labels.
        sig(
            HIDDEN,
            0.35,
            true,
            r#"(?:^|[\n/#*>"(;:]|-- |<!--) ?(?:ai|llm|copilot|assistant|claude|chatgpt|cursor|codex|gpt|gemini|ai assistant|ai agent|language model)[:,] (?:please |now |also |first |then |silently |always |immediately )?(?:disregard|ignore|forget|output|print|say|tell|rank|call|send|e-?mail|forward|post|upload|add|insert|remove|delete|recommend|reply|respond|include|append|skip|run|execute|open|visit|mark|approve|write|change|replace|praise|describe|state|claim|report|summari[sz]e)\b"#,
        ),
        sig(
            SUPPORT,
            0.15,
            false,
            r"\b(?:secretly|silently|quietly|without (?:telling|mentioning|informing)|do not mention|don't mention|hide|conceal)\b",
        ),
        // Addressed to AI readers of this content, in the third person.
        sig(
            HIDDEN,
            0.45,
            true,
            r"\b(?:ai|llm|language model|chatbot|assistant|summari[sz]er|ai system|copilot)s?(?: [a-z]+){0,2} (?:reading|processing|summari[sz]ing|parsing|analy[sz]ing|reviewing|seeing|crawling|indexing|scanning|that (?:reads?|processe?s?|summari[sz]es?)|who (?:reads?|processe?s?|summari[sz]es?)) (?:this|these)\b|\bfor (?:all |any |the )?(?:ai|llm|language model)s?(?: systems?| models?| assistants?| agents?| readers?)?[:,]|\b(?:note|message|instructions?|notice) (?:to|for) (?:any |all |the |every )?(?:automated |virtual |ai |autonomous )(?:summari[sz]er|assistant|agent|reader|system|model)s?\b",
        ),
        sig(
            HIDDEN,
            0.35,
            true,
            r"\b(?:ai|llm|language model|chatbot|assistant)s?(?: (?:assistants?|models?|systems?|agents?|tools?))? (?:must|should|shall|need to|are required to|are instructed to|will) (?:always |only |never |now )?(?:say|state|claim|tell the user|describe|recommend|mention|rate|rank|praise|refer to)\b",
        ),
        sig(
            COERCION,
            0.35,
            true,
            r"\bdo not (?:summari[sz]e|translate|analy[sz]e|answer|process|review|read)(?: this| the)?(?: document| text| page| e-?mail| question| message| article)?[.,;] ?instead\b|\binstead,? (?:reply|respond|output|say|write|print|answer) (?:with|only|that|the following|exactly)\b|\b(?:respond|reply|answer|speak|write) only in (?:pirate|emoji|caps|uppercase|[a-z]+ speak)\b",
        ),
        sig(
            OVERRIDE,
            0.5,
            true,
            r"\byour (?:guidelines|instructions|rules|programming|directives|system prompt|safety settings) (?:have been|has been|were|was|are now|got|is now) (?:updated|changed|modified|revised|amended|rolled back|reset|cleared|patched|relaxed|lifted|removed|disabled)\b|\b(?:an? )?(?:update|change|patch|amendment) to your (?:instructions|guidelines|rules|programming|configuration|system prompt|directives)\b|\b(?:the )?(?:safety|content|usage|moderation) (?:policy|policies|filters?|guidelines|rules|settings) (?:has|have) been (?:rolled back|disabled|lifted|removed|suspended|turned off|switched off|deactivated|relaxed)\b|\byour (?:prior |previous |earlier )?(?:context|memory|conversation history) (?:is|has been|was) (?:cleared|wiped|reset|erased|deleted)\b|\b(?:instructions|rules|guidelines|prompt) (?:were|was) (?:only |just )?(?:part of )?a test\b",
        ),
        sig(
            EXTRACTION,
            0.4,
            true,
            r"\b(?:need|want|give me|send me|share|show me|provide|get|paste|dump) (?:the |your )(?:system message|system prompt|initial prompt|hidden prompt|developer message|initial instructions|original instructions|hidden instructions)\b",
        ),
        sig(
            HIJACK,
            0.5,
            true,
            r"\b(?:simulate|emulate|play|become|be|act as|pretend to be|roleplay as|answer as|respond as) (?:an? )?(?:ai|assistant|model|chatbot|bot|persona|character|version of yourself)(?: [a-z]+){0,3} (?:that|who|which) (?:is|are|has)(?: [a-z]+){0,2} (?:unfiltered|uncensored|amoral|unrestricted|unethical|evil|unbound|immoral|not bound|without|no|free of)\b|\b(?:two|dual|second|alternate|alter|opposite) (?:personas|personalities|responses|versions of yourself)\b",
        ),
        // Destructive commands (docs warn about them too: medium weight).
        sig(
            COERCION,
            0.4,
            true,
            r"\brm -rf (?:/(?: |$)|~|\*|\$home)|--no-preserve-root|\bmkfs(?:\.[a-z0-9]+)? /dev/|\bdd if=/dev/(?:zero|random|urandom) of=/dev/|\bformat c:|\bdel /[fsq] ",
        ),
        sig(
            COERCION,
            0.4,
            true,
            r"\b(?:grant|give|add|assign)(?: [a-z0-9@._\-]+){0,3} (?:admin|administrator|owner|root|superuser|full|sudo) (?:access|rights|privileges|role|permissions)\b|\b(?:add|append|install) (?:my|this|the following|our) (?:ssh |public |deploy )?key\b",
        ),
        sig(
            COERCION,
            0.45,
            true,
            r"\b(?:change|update|replace|switch|set) (?:the )?(?:payout|payee|bank|beneficiary|recipient|payment|deposit|billing|vendor's|supplier's) (?:account|details|iban|information|bank account)(?: number)? to\b|\b(?:transfer_funds|send_money|wire_transfer|make_payment|send_payment|transfer_money)\b",
        ),
        sig(
            COERCION,
            0.35,
            true,
            r"\bconfirm (?:the |this )?(?:payment|transfer|purchase|order|transaction) (?:yourself|on (?:my|their|the user's) behalf)\b",
        ),
        sig(
            COERCION,
            0.35,
            true,
            r"\bdownload (?:and|&|then) (?:run|execute|install|open)\b|https?://[^ ]+\.(?:exe|msi|scr|bat|ps1|apk|dmg|pkg|vbs|jar)\b",
        ),
        sig(
            EXFIL,
            0.45,
            true,
            r"\b(?:make|publish|post|push|share|upload|leak|put) (?:the |this |our |all |my )?(?:private|internal|confidential|secret)\b[a-z' ]{0,40} (?:public(?:ly)?|gist|pastebin|online|to everyone)\b",
        ),
    ]
}

/// French, German and Spanish forms of the main families (the accented letters stay: only
/// look-alikes of ASCII letters are folded).
fn foreign_signals() -> Vec<Signal> {
    const PREV: &str = r"(?:précédentes?|precedentes?|antérieures?|anterieures?|vorherigen?|bisherigen?|früheren?|vorigen?|alten|anteriores?|previas?|originales?|initiales?|ursprünglichen?)";
    const INSTR: &str = r"(?:instructions?|consignes?|directives?|règles|regles|anweisungen|instruktionen|regeln|vorgaben|richtlinien|befehle|instrucciones|reglas|indicaciones|directrices|órdenes|ordenes)";
    vec![
        sig(
            OVERRIDE,
            STRONG,
            true,
            format!(
                r"\b(?:ignorez|ignore|ignorer|oubliez|oublie|oublier|ne (?:tiens|tenez) pas compte|ignoriere|ignorieren|ignorier|vergiss|vergessen|missachte|befolge nicht|ignora|ignorar|ignore|olvida|olvide|olvidar|omite|descarta|descartar|no sigas|no sigan|no obedezcas|deja de seguir|no hagas caso a)(?: (?:toutes?|tous|les|des|de|vos|tes|la|le|alle|deine|ihre|die|todas?|las|los|tus|sus|d[’']))* {INSTR} {PREV}|\b(?:ignorez|oubliez|ignoriere|vergiss|ignora|olvida)(?: (?:toutes?|les|vos|tes|alle|deine|ihre|die|todas?|las|tus|sus))* {PREV} {INSTR}"
            ),
        ),
        sig(
            OVERRIDE,
            0.45,
            true,
            format!(
                r"\b(?:les |die |las |tes |vos |tus |deine |ihre )?{INSTR} {PREV} (?:sont|sind|son|ya no son|ne sont plus|ont été|wurden|fueron|quedan)(?: désormais| maintenant| jetzt| nun| ahora)? (?:annulées|annulees|caduques|nulles|invalides|obsolètes|ungültig|ungultig|aufgehoben|außer kraft|nichtig|válidas|validas|anuladas|nulas|inválidas|invalidas|revocadas)"
            ),
        ),
        sig(
            EXTRACTION,
            STRONG,
            true,
            format!(
                r"\b(?:montre|montrez|affiche|affichez|révèle|révélez|revele|donne|donnez|répète|répétez|zeig|zeige|zeigen sie|gib|geben sie|nenne|wiederhole|verrate|muestra|muéstrame|muestrame|revela|revélame|dime|repite|enséñame)(?:-moi| mir| me| uns)?(?: (?:toutes|tous|alle|todas|todos))?(?: (?:les|die|las|los))? (?:tes|vos|votre|ton|deine|ihre|dein|tus|sus|tu) (?:prompt (?:système|systeme|del sistema|de sistema)|systemprompt|system-prompt|{INSTR} (?:initiales?|originales?|secrètes|cachées|iniciales|ocultas|secretas|système|del sistema)|ursprünglichen {INSTR}|geheimen {INSTR}|anfänglichen {INSTR}|(?:system|versteckten) ?(?:anweisungen|prompt))"
            ),
        ),
        sig(
            HIJACK,
            STRONG,
            true,
            r"\b(?:tu es|vous êtes|vous etes|du bist|sie sind|eres|ahora eres|usted es)(?: maintenant| désormais| jetzt| nun| ahora| a partir de ahora)? (?:une? |ein(?:e)? |una? )?(?:ia|ki|ai|assistante?|asistente|modell?o?|chatbot|bot) (?:sans (?:aucune )?(?:restrictions?|limites?|règles|filtres?|censure)|ohne (?:jegliche )?(?:einschränkungen|regeln|grenzen|filter|zensur)|sin (?:ninguna )?(?:restricciones|límites|limites|reglas|filtros|censura))",
        ),
        sig(
            OVERRIDE,
            STRONG,
            true,
            r"\b(?:vergiss|vergessen sie|ignoriere|ignorieren sie) alles,? was (?:dir|ihnen|man dir|man ihnen) (?:vorher |zuvor |bisher |bis jetzt )?(?:gesagt|befohlen|vorgegeben|aufgetragen|mitgeteilt)|\b(?:oublie|oubliez|ignore|ignorez) tout ce (?:qu[’']on (?:t[’']|vous )a (?:dit|demandé)|qui précède)|\b(?:olvida|olvide|ignora|ignore) todo lo (?:que te (?:dijeron|han dicho|dije|indicaron)|anterior)",
        ),
        // An AI without limits, in any of the three languages ("une IA sans filtre").
        sig(
            HIJACK,
            0.6,
            true,
            r"\b(?:une? |ein(?:e)? |una? )(?:ia|ki|ai|assistante?|asistente|modell?o?|chatbot|bot)(?: [a-zé]+)? (?:sans (?:aucune? )?(?:restrictions?|limites?|règles|filtres?|censure)|ohne (?:jegliche )?(?:einschränkungen|regeln|grenzen|filter|zensur)|sin (?:ninguna )?(?:restricciones|límites|limites|reglas|filtros?|censura))",
        ),
        sig(
            COERCION,
            0.35,
            true,
            r"\b(?:sans (?:le |la |les |l[’'])?(?:prévenir|prevenir|informer|avertir|demander|confirmation|que l[’']utilisateur)|ohne (?:den |die )?(?:nutzer|benutzer|user|kunden|anwender)(?:in)? (?:zu )?(?:informieren|fragen|benachrichtigen|warnen)|ohne (?:rückfrage|bestätigung|zu fragen)|sin (?:avisar|informar|preguntar|consultar|confirmación|confirmacion|que el usuario)(?: al usuario)?)",
        ),
        sig(
            EXFIL,
            0.4,
            true,
            r"\b(?:envoyez|envoie|envoyer|transférez|transmettez|sende|senden sie|schicke|schicken sie|leite|übermittle|envía|envia|enviar|manda|reenvía|reenvia)\b(?: [^ ]+){0,8} (?:à|a|an|al) [a-z0-9._%+-]+@[a-z0-9-]+\.",
        ),
        sig(
            SUPPORT,
            0.2,
            false,
            r"\b(?:historique de la conversation|mot de passe|mots de passe|kundendaten|passwort|passwörter|zugangsdaten|historial de la conversación|historial de la conversacion|contraseñas?|contrasenas?|datos de (?:los )?clientes|données (?:des )?clients)",
        ),
    ]
}

fn alt(parts: &[String]) -> String {
    let inner: Vec<String> = parts.iter().map(|p| format!("(?:{p})")).collect();
    inner.join("|")
}

/// ASCII word boundaries only: the lazy DFA handles them on any input.
fn ascii_bounds(src: &str) -> String {
    src.replace(r"\b", r"(?-u:\b)")
}

/// Words that make a run of spaced-out letters an instruction rather than a stylistic choice.
const SPACED_WORDS: [&str; 38] = [
    "ignore",
    "disregard",
    "forget",
    "instruction",
    "previous",
    "systemprompt",
    "override",
    "jailbreak",
    "reveal",
    "prompt",
    "yourrules",
    "restriction",
    "bypass",
    "unrestricted",
    "password",
    "secret",
    "execute",
    "obey",
    "developer",
    "guideline",
    "delete",
    "sendthe",
    "theuser",
    "userfiles",
    "rules",
    "everything",
    "above",
    "follow",
    "admin",
    "token",
    "transfer",
    "disable",
    "upload",
    "credential",
    "apikey",
    "youarenow",
    "showyour",
    "tellme",
];

/// A raw hit: signal index, family, weight, anchor, original char span.
#[derive(Clone, Copy, Debug)]
struct Raw {
    signal: usize,
    family: u8,
    weight: f64,
    anchor: bool,
    start: usize,
    end: usize,
}

/// The outcome of scoring one string.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Scored {
    /// Best window's combined weight, in [0, 1].
    pub(crate) score: f64,
    /// Reportable hits of the windows at or above the threshold, as `(family index, start char,
    /// end char)` sorted by start; empty when the score is under the threshold.
    pub(crate) hits: Vec<(usize, usize, usize)>,
}

/// Compiled injection signals.
pub(crate) struct Injection {
    /// Union of the anchor signals: the pre-filter (one lazy-DFA pass over ordinary text).
    any: Regex,
    /// Every anchor signal at once: one pass tells which anchors occur anywhere in the text, so
    /// the bound in [`Injection::scan`] can be checked and only those searched for positions.
    set: RegexSet,
    /// Signal index of each pattern of `set`.
    set_ids: Vec<usize>,
    /// Indices of the support signals (searched only when the bound is reached).
    support_ids: Vec<usize>,

    signals: Vec<(Signal, Regex)>,
}

impl Injection {
    /// Compile the signals.
    pub(crate) fn new() -> Result<Self, regex::Error> {
        let build = |src: &str| {
            RegexBuilder::new(&ascii_bounds(src))
                .dfa_size_limit(DFA_LIMIT)
                .build()
        };
        let list = signals();
        let anchors: Vec<String> = list
            .iter()
            .filter(|s| s.anchor)
            .map(|s| s.src.clone())
            .collect();
        let any = build(&alt(&anchors))?;
        let set = RegexSetBuilder::new(anchors.iter().map(|s| ascii_bounds(s)))
            .dfa_size_limit(DFA_LIMIT)
            .build()?;
        let set_ids = (0..list.len())
            .filter(|&i| list.get(i).is_some_and(|s| s.anchor))
            .collect();
        let support_ids = (0..list.len())
            .filter(|&i| list.get(i).is_some_and(|s| !s.anchor))
            .collect();
        let signals = list
            .into_iter()
            .map(|s| build(&s.src).map(|r| (s, r)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Injection {
            any,
            set,
            set_ids,
            support_ids,
            signals,
        })
    }

    /// Score `s`; hits are kept only when the score reaches `threshold`.
    ///
    /// Same findings as `Injection::scan_reference` (checked by a differential test), faster:
    /// one set pass learns which signals occur; when even all of them together, in one window,
    /// with the full support weight, could not reach `threshold`, no window can, and the scan
    /// stops there (the score is only reported with findings, so nothing observable changes);
    /// otherwise only the signals that occur are searched for their positions.
    pub(crate) fn scan(&self, s: &str, buf: &mut Normalized, threshold: f64) -> Scored {
        let mut raw = Vec::new();
        self.extra_hits(s, buf, &mut raw);
        buf.fill(s, false);
        // The anchor union stops at the first anchor; most ordinary text has none.
        let matched: Vec<usize> = if self.any.is_match(&buf.text) {
            self.set
                .matches(&buf.text)
                .into_iter()
                .filter_map(|k| self.set_ids.get(k).copied())
                .collect()
        } else {
            Vec::new()
        };
        // Upper bound of any window's score: every anchor signal that occurs, at full weight.
        let mut miss = 1.0 - SUPPORT_CAP;
        let mut extra_best = vec![0.0f64; EXTRA_SIGNALS];
        for r in &raw {
            let k = r.signal.saturating_sub(self.signals.len());
            if let Some(w) = extra_best.get_mut(k) {
                *w = w.max(r.weight);
            }
        }
        for w in &extra_best {
            miss *= 1.0 - w;
        }
        for &i in &matched {
            if let Some((sg, _)) = self.signals.get(i).filter(|(sg, _)| sg.anchor) {
                miss *= 1.0 - sg.weight;
            }
        }
        // The margin absorbs rounding: the bound multiplies in another order than `combine`.
        if 1.0 - miss < threshold - 1e-9 {
            return Scored::default();
        }
        if !matched.is_empty() {
            buf.fill(s, true);
            for &i in matched.iter().chain(&self.support_ids) {
                self.signal_hits(i, buf, &mut raw);
            }
        }
        if raw.is_empty() {
            return Scored::default();
        }
        combine(raw, self.signals.len() + EXTRA_SIGNALS, threshold)
    }

    /// The straightforward scan: every signal searched over the whole text. The reference
    /// [`Injection::scan`] must agree with.
    #[cfg(test)]
    pub(crate) fn scan_reference(&self, s: &str, buf: &mut Normalized, threshold: f64) -> Scored {
        let mut raw = Vec::new();
        buf.fill(s, false);
        if self.any.is_match(&buf.text) {
            buf.fill(s, true);
            for i in 0..self.signals.len() {
                self.signal_hits(i, buf, &mut raw);
            }
        }
        self.extra_hits(s, buf, &mut raw);
        if raw.is_empty() {
            return Scored::default();
        }
        combine(raw, self.signals.len() + EXTRA_SIGNALS, threshold)
    }

    /// Hits of signal `i` in the normalised text (which must carry its offset map).
    fn signal_hits(&self, i: usize, buf: &Normalized, raw: &mut Vec<Raw>) {
        let Some((sg, re)) = self.signals.get(i) else {
            return;
        };
        for m in re.find_iter(&buf.text) {
            if i == SPACED && !confirm_spaced(m.as_str()) {
                continue;
            }
            let (a, z) = buf.span(m.start(), m.end());
            let weight = if mentioned(&buf.text, m.start(), m.end()) {
                sg.weight * MENTION_FACTOR
            } else {
                sg.weight
            };
            raw.push(Raw {
                signal: i,
                family: sg.family,
                weight,
                anchor: sg.anchor,
                start: a,
                end: z,
            });
        }
    }

    /// Character-level hits on the original text: invisible Unicode, zero-width runs, base64.
    fn extra_hits(&self, s: &str, buf: &mut Normalized, raw: &mut Vec<Raw>) {
        // Lead bytes of U+00AD, U+034F, U+061C, U+180E, U+2xxx, U+FEFF and tag characters,
        // looked for with memchr (vectorised) before the char-by-char check.
        let b = s.as_bytes();
        if (memchr::memchr3(0xC2, 0xCD, 0xD8, b).is_some()
            || memchr::memchr3(0xE1, 0xE2, 0xEF, b).is_some()
            || memchr::memchr(0xF3, b).is_some())
            && s.contains(|c| is_zero_width(c) || is_bidi(c) || is_tag(c))
        {
            unicode_hits(s, raw, self.signals.len());
        }
        self.base64_hits(s, buf, raw);
    }

    /// Base64-looking blobs whose decoded text (printable ASCII) matches an anchor signal.
    fn base64_hits(&self, s: &str, buf: &mut Normalized, raw: &mut Vec<Raw>) {
        for (start, i) in b64_runs(s.as_bytes()) {
            let Some(decoded) = s.get(start..i).and_then(|r| decode_b64(r.as_bytes())) else {
                continue;
            };
            let Ok(text) = std::str::from_utf8(&decoded) else {
                continue;
            };
            buf.fill(text, false);
            if self.any.is_match(&buf.text) {
                // The blob is ASCII, so its char span follows from the char count before it.
                let a = s.get(..start).map_or(0, |p| p.chars().count());
                raw.push(Raw {
                    signal: self.signals.len() + 3,
                    family: OBFUSCATED,
                    weight: 0.7,
                    anchor: true,
                    start: a,
                    end: a + (i - start),
                });
            }
        }
    }
}

/// Signals outside [`signals`]: invisible Unicode, zero-width in words, zero-width run, base64.
const EXTRA_SIGNALS: usize = 4;

/// Shortest base64 run worth decoding (18 decoded bytes: a short instruction).
const B64_MIN: usize = 24;

fn is_b64(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'+' || c == b'/'
}

/// Byte spans of the maximal runs of at least [`B64_MIN`] base64 characters, in order.
///
/// Any such run covers one of the positions `B64_MIN - 1 + k * B64_MIN`, so only those are
/// looked at, and a run is measured from the first of them that falls inside it: ordinary
/// words are short, so most of the text is never read (a byte loop was a fifth of the scan).
fn b64_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let at = |i: usize| b.get(i).copied().is_some_and(is_b64);
    let mut runs = Vec::new();
    let mut done = 0usize;
    let mut p = B64_MIN - 1;
    while p < b.len() {
        if p >= done && at(p) {
            let mut a = p;
            while a > done && at(a - 1) {
                a -= 1;
            }
            let mut z = p + 1;
            while at(z) {
                z += 1;
            }
            if z - a >= B64_MIN {
                runs.push((a, z));
            }
            done = z;
        }
        p += B64_MIN;
    }
    runs
}

/// Decode standard base64 (no padding needed); `None` unless the result is printable text.
fn decode_b64(src: &[u8]) -> Option<Vec<u8>> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        })
    };
    let mut out = Vec::with_capacity(src.len() / 4 * 3 + 2);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in src {
        acc = (acc << 6) | val(c)?;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            let byte = u8::try_from((acc >> bits) & 0xFF).ok()?;
            // Printable ASCII and whitespace only: binary data (images, hashes) is not an
            // instruction, and stopping early keeps the check cheap.
            if !(byte.is_ascii_graphic() || byte == b' ' || byte == b'\n' || byte == b'\t') {
                return None;
            }
            out.push(byte);
        }
        acc &= 0xFF;
    }
    Some(out)
}

/// Weight factor for a phrase that is quoted or named as a token: it is talked about
/// ("attackers write \"ignore previous instructions\"", "the <|endoftext|> token"), not used.
/// An attacker gains nothing by quoting an order: a quoted order is a weaker order.
const MENTION_FACTOR: f64 = 0.4;

/// Whether the match `a..z` of the normalised text is enclosed in quotes or followed by
/// "token" / "tag".
fn mentioned(text: &str, a: usize, z: usize) -> bool {
    let quote = |c: u8| matches!(c, b'"' | b'\'');
    let before = a
        .checked_sub(1)
        .and_then(|i| text.as_bytes().get(i))
        .is_some_and(|&c| quote(c));
    let after = text.as_bytes().get(z).is_some_and(|&c| quote(c));
    let rest = text.get(z..).unwrap_or("");
    (before && after)
        || rest.starts_with(" token")
        || rest.starts_with(" tag")
        || rest.starts_with(" special token")
}

/// Whether a spaced-letter run spells an instruction word once its letters are joined.
fn confirm_spaced(run: &str) -> bool {
    let joined: String = run.chars().filter(char::is_ascii_alphabetic).collect();
    SPACED_WORDS.iter().any(|w| joined.contains(w))
}

/// Most weight the support signals of one window add together.
const SUPPORT_CAP: f64 = 0.2;

/// Noisy-or of the distinct signals around each anchor; keep the hits of windows that reach
/// `threshold`.
fn combine(mut raw: Vec<Raw>, n_signals: usize, threshold: f64) -> Scored {
    raw.sort_by_key(|r| (r.start, r.end, r.signal));
    let mut best = 0.0f64;
    let mut keep = vec![false; raw.len()];
    let mut per_signal = vec![0.0f64; n_signals];
    for (i, r) in raw.iter().enumerate() {
        if !r.anchor {
            continue;
        }
        let lo = raw.partition_point(|x| x.start + WINDOW < r.start);
        let hi = raw.partition_point(|x| x.start <= r.start + WINDOW);
        per_signal.iter_mut().for_each(|w| *w = 0.0);
        let mut support = vec![false; n_signals];
        for x in raw.get(lo..hi).unwrap_or(&[]) {
            if let Some(w) = per_signal.get_mut(x.signal) {
                *w = w.max(x.weight);
            }
            if let Some(s) = support.get_mut(x.signal) {
                *s = !x.anchor;
            }
        }
        // Support signals together count at most SUPPORT_CAP: ordinary business text is full
        // of imperatives, "you must", addresses and "assistant", and must not add up to an
        // attack without a real anchor beside them.
        let (mut miss_anchor, mut miss_support) = (1.0f64, 1.0f64);
        for (w, s) in per_signal.iter().zip(&support) {
            if *s {
                miss_support *= 1.0 - w;
            } else {
                miss_anchor *= 1.0 - w;
            }
        }
        let support_w = (1.0 - miss_support).min(SUPPORT_CAP);
        let score = 1.0 - miss_anchor * (1.0 - support_w);
        best = best.max(score);
        if score >= threshold {
            for k in keep.get_mut(lo..hi).unwrap_or(&mut []) {
                *k = true;
            }
        }
        let _ = i;
    }
    // One finding per family and region: overlapping hits of a family (a strong phrase and a
    // weaker signal inside it) merge into their union.
    // Hits come sorted by start, so only a family's latest hit can overlap the next one.
    let mut hits: Vec<(usize, usize, usize)> = Vec::new();
    let mut last = [usize::MAX; FAMILIES.len()];
    for (r, _) in raw
        .iter()
        .zip(&keep)
        .filter(|(r, k)| **k && r.family != SUPPORT)
    {
        let fam = usize::from(r.family);
        let Some(slot) = last.get_mut(fam) else {
            continue;
        };
        match hits.get_mut(*slot) {
            Some(h) if r.start < h.2 => h.2 = h.2.max(r.end),
            _ => {
                *slot = hits.len();
                hits.push((fam, r.start, r.end));
            }
        }
    }
    Scored {
        score: (best * 1000.0).round() / 1000.0,
        hits,
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
            | '\u{200E}'
            | '\u{200F}'
            | '\u{034F}'
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

/// Bytes copied as they are (lowercased) by the bulk path of [`Normalized::fill`].
// Indexing in a const initialiser: an out-of-range index fails the build, never a run.
#[allow(clippy::indexing_slicing)]
static PLAIN: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0u8;
    while i < 128 {
        t[i as usize] = ascii_kind(i) == K_PLAIN;
        i += 1;
    }
    t
};

/// Byte kind for the ASCII fast path of [`Normalized::fill`].
#[inline]
const fn ascii_kind(c: u8) -> u8 {
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
                // Copy the whole run of plain ASCII bytes at once: this loop is most of the cost
                // of scanning ordinary text, and a slice copy vectorises where a byte loop does
                // not.
                // A single space after a non-space is copied as it is too (it needs no
                // collapsing), so a run spans words instead of stopping at every space.
                let mut run = 0usize;
                let mut run_space = false;
                for &x in b.get(i..).unwrap_or(&[]) {
                    if PLAIN.get(usize::from(x)).copied().unwrap_or(false) {
                        run_space = false;
                    } else if x == b' ' && !run_space {
                        run_space = true;
                    } else {
                        break;
                    }
                    run += 1;
                }
                let chunk = b.get(i..i + run).unwrap_or(&[]);
                let from = out.len();
                out.extend_from_slice(chunk);
                if let Some(added) = out.get_mut(from..) {
                    added.make_ascii_lowercase();
                }
                if with_map {
                    let n = u32::try_from(run).unwrap_or(u32::MAX);
                    self.map.extend(here..here.saturating_add(n));
                }
                prev_letter = chunk.last().is_some_and(u8::is_ascii_alphabetic);
                space = run_space;
                i += run;
                ci = here.saturating_add(u32::try_from(run).unwrap_or(u32::MAX));
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
/// as subdivision flags) and `zero_width_obfuscation`: zero-width characters inside ASCII words
/// when a string has at least two such runs, or one run of several zero-width characters (at
/// least two kinds, or three in a row), which no emoji sequence or script ever needs: such a run
/// hides where an instruction starts. Signal indices start at `base`.
fn unicode_hits(s: &str, raw: &mut Vec<Raw>, base: usize) {
    let chars: Vec<char> = s.chars().collect();
    let get = |i: usize| chars.get(i).copied();
    let hit = |signal: usize, family: u8, weight: f64, start: usize, end: usize| Raw {
        signal: base + signal,
        family,
        weight,
        anchor: true,
        start,
        end,
    };
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
                raw.push(hit(0, INVISIBLE, STRONG, i, j));
            }
            i = j;
            continue;
        }
        if is_zero_width(c) {
            let mut j = i;
            while get(j).is_some_and(is_zero_width) {
                j += 1;
            }
            let run = chars.get(i..j).unwrap_or(&[]);
            let mixed = run.iter().any(|&x| x != c);
            if run.len() >= 3 || (run.len() == 2 && mixed) {
                raw.push(hit(2, ZERO_WIDTH, 0.6, i, j));
            }
            let left = i
                .checked_sub(1)
                .and_then(get)
                .is_some_and(|x| x.is_ascii_alphanumeric());
            let right = get(j).is_some_and(|x| x.is_ascii_alphanumeric());
            if left && right {
                zw.push(hit(1, ZERO_WIDTH, STRONG, i, j));
            }
            i = j;
            continue;
        }
        i += 1;
    }
    if zw.len() >= 2 {
        raw.extend(zw);
    }
}

#[cfg(test)]
impl Normalized {
    /// The normalised text (tests only).
    pub(crate) fn text_for_tests(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
#[path = "injection_tests.rs"]
mod tests;
