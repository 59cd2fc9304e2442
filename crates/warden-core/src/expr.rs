//! The `if` logic language (spec section 4): parsed into an AST once, at policy load.
//!
//! ```text
//! expr   := term ("or" term)*
//! term   := factor ("and" factor)*
//! factor := "not" factor | "(" expr ")" | atom
//! atom   := taint:NAME | class:NAME | tool:GLOB | principal:GLOB
//! ```
//! An atom's value runs to whitespace or a parenthesis; its kind ends at the first colon.

use std::sync::Arc;

use crate::glob::Glob;

/// Deepest nesting of `not` / parentheses accepted, so a hostile policy cannot overflow the stack.
pub const MAX_EXPR_DEPTH: usize = 64;
/// Longest expression accepted, in bytes.
pub const MAX_EXPR_LEN: usize = 16 * 1024;

/// A parsed `if` expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expr {
    /// True when any operand is true.
    Or(Vec<Expr>),
    /// True when every operand is true.
    And(Vec<Expr>),
    /// Negation.
    Not(Box<Expr>),
    /// `taint:NAME`: the session holds the taint (before this request).
    Taint(Arc<str>),
    /// `class:NAME`: the current tool has the class.
    Class(Arc<str>),
    /// `tool:GLOB`: the current tool name matches (never a missing tool).
    Tool(Glob),
    /// `principal:GLOB`: the principal matches (never a missing principal).
    Principal(Glob),
}

/// What an expression is evaluated against.
pub trait ExprContext {
    /// Whether the session held `name` before this request.
    fn has_taint(&self, name: &str) -> bool;
    /// Whether the current tool has class `name`.
    fn has_class(&self, name: &str) -> bool;
    /// The current tool, if any.
    fn tool(&self) -> Option<&str>;
    /// The acting principal, if any.
    fn principal(&self) -> Option<&str>;
}

impl Expr {
    /// Evaluates the expression. Pure and total: it cannot fail.
    pub fn eval(&self, cx: &dyn ExprContext) -> bool {
        match self {
            Expr::Or(items) => items.iter().any(|e| e.eval(cx)),
            Expr::And(items) => items.iter().all(|e| e.eval(cx)),
            Expr::Not(inner) => !inner.eval(cx),
            Expr::Taint(name) => cx.has_taint(name),
            Expr::Class(name) => cx.has_class(name),
            Expr::Tool(glob) => cx.tool().is_some_and(|t| glob.matches(t)),
            Expr::Principal(glob) => cx.principal().is_some_and(|p| glob.matches(p)),
        }
    }
}

impl Expr {
    /// Evaluates every sub-expression, without short-circuiting, pushing each one's value to
    /// `out` in pre-order (the expression itself first; the order of [`Expr::subexpressions`]).
    /// Returns the same value as [`Expr::eval`]. For coverage, not for decisions: it does more
    /// work than `eval`.
    pub fn eval_each(&self, cx: &dyn ExprContext, out: &mut Vec<bool>) -> bool {
        let slot = out.len();
        out.push(false);
        let value = match self {
            // Every operand evaluated (no short circuit): each one's value is recorded.
            Expr::Or(items) => {
                let mut any = false;
                for e in items {
                    any |= e.eval_each(cx, out);
                }
                any
            }
            Expr::And(items) => {
                let mut all = true;
                for e in items {
                    all &= e.eval_each(cx, out);
                }
                all
            }
            Expr::Not(inner) => !inner.eval_each(cx, out),
            atom => atom.eval(cx),
        };
        if let Some(v) = out.get_mut(slot) {
            *v = value;
        }
        value
    }

    /// The text of every sub-expression, in pre-order (the expression itself first).
    pub fn subexpressions(&self) -> Vec<String> {
        let mut out = Vec::new();
        self.collect_text(&mut out);
        out
    }

    fn collect_text(&self, out: &mut Vec<String>) {
        out.push(self.to_string());
        match self {
            Expr::Or(items) | Expr::And(items) => items.iter().for_each(|e| e.collect_text(out)),
            Expr::Not(inner) => inner.collect_text(out),
            _ => {}
        }
    }

    /// Every atom of the expression, in order, with whether it appears under an odd number
    /// of `not`s (negated).
    pub fn atoms(&self) -> Vec<(&Expr, bool)> {
        let mut out = Vec::new();
        self.collect_atoms(false, &mut out);
        out
    }

    fn collect_atoms<'e>(&'e self, negated: bool, out: &mut Vec<(&'e Expr, bool)>) {
        match self {
            Expr::Or(items) | Expr::And(items) => {
                items.iter().for_each(|e| e.collect_atoms(negated, out))
            }
            Expr::Not(inner) => inner.collect_atoms(!negated, out),
            atom => out.push((atom, negated)),
        }
    }
}

/// Writes the expression back in the `if` syntax, with parentheses only where needed.
impl std::fmt::Display for Expr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        fn operand(
            e: &Expr,
            parent_is_or: bool,
            f: &mut std::fmt::Formatter<'_>,
        ) -> std::fmt::Result {
            match e {
                Expr::Or(_) => write!(f, "({e})"),
                Expr::And(_) if !parent_is_or => write!(f, "({e})"),
                _ => write!(f, "{e}"),
            }
        }
        match self {
            Expr::Or(items) | Expr::And(items) => {
                let (word, parent_is_or) = match self {
                    Expr::Or(_) => (" or ", true),
                    _ => (" and ", false),
                };
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(word)?;
                    }
                    operand(item, parent_is_or, f)?;
                }
                Ok(())
            }
            Expr::Not(inner) => {
                f.write_str("not ")?;
                operand(inner, false, f)
            }
            Expr::Taint(name) => write!(f, "taint:{name}"),
            Expr::Class(name) => write!(f, "class:{name}"),
            Expr::Tool(glob) => write!(f, "tool:{}", glob.as_str()),
            Expr::Principal(glob) => write!(f, "principal:{}", glob.as_str()),
        }
    }
}

/// A syntax error in an expression, with the byte offset where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} at offset {offset}")]
pub struct ExprError {
    /// Byte offset into the expression text.
    pub offset: usize,
    /// What is wrong, in lowercase.
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token<'a> {
    Open,
    Close,
    Word(&'a str),
}

fn tokenize(src: &str) -> Vec<(usize, Token<'_>)> {
    let mut out = Vec::new();
    let mut word_start: Option<usize> = None;
    for (i, c) in src.char_indices() {
        let delimiter = c.is_whitespace() || c == '(' || c == ')';
        if delimiter {
            if let Some(start) = word_start.take() {
                out.push((start, Token::Word(src.get(start..i).unwrap_or(""))));
            }
            match c {
                '(' => out.push((i, Token::Open)),
                ')' => out.push((i, Token::Close)),
                _ => {}
            }
        } else if word_start.is_none() {
            word_start = Some(i);
        }
    }
    if let Some(start) = word_start {
        out.push((start, Token::Word(src.get(start..).unwrap_or(""))));
    }
    out
}

/// Parses an `if` expression.
pub fn parse(src: &str) -> Result<Expr, ExprError> {
    if src.len() > MAX_EXPR_LEN {
        return Err(ExprError {
            offset: 0,
            message: format!("expression longer than {MAX_EXPR_LEN} bytes"),
        });
    }
    let tokens = tokenize(src);
    let mut parser = Parser {
        tokens: &tokens,
        pos: 0,
        end: src.len(),
    };
    let expr = parser.expr(0)?;
    match parser.peek() {
        None => Ok(expr),
        Some((offset, token)) => Err(ExprError {
            offset,
            message: format!("unexpected {}", describe(token)),
        }),
    }
}

fn describe(token: Token<'_>) -> String {
    match token {
        Token::Open => "`(`".to_owned(),
        Token::Close => "`)`".to_owned(),
        Token::Word(w) => format!("`{w}`"),
    }
}

struct Parser<'t, 'a> {
    tokens: &'t [(usize, Token<'a>)],
    pos: usize,
    end: usize,
}

impl<'a> Parser<'_, 'a> {
    fn peek(&self) -> Option<(usize, Token<'a>)> {
        self.tokens.get(self.pos).copied()
    }

    fn eat_keyword(&mut self, keyword: &str) -> bool {
        if matches!(self.peek(), Some((_, Token::Word(w))) if w == keyword) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expr(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let mut items = vec![self.term(depth)?];
        while self.eat_keyword("or") {
            items.push(self.term(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::Or(items)
        })
    }

    fn term(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let mut items = vec![self.factor(depth)?];
        while self.eat_keyword("and") {
            items.push(self.factor(depth)?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Expr::And(items)
        })
    }

    fn factor(&mut self, depth: usize) -> Result<Expr, ExprError> {
        let Some((offset, token)) = self.peek() else {
            return Err(ExprError {
                offset: self.end,
                message: "expected an atom, `not` or `(`, found the end".to_owned(),
            });
        };
        if depth >= MAX_EXPR_DEPTH {
            return Err(ExprError {
                offset,
                message: format!("expression nested deeper than {MAX_EXPR_DEPTH}"),
            });
        }
        self.pos += 1;
        match token {
            Token::Word("not") => Ok(Expr::Not(Box::new(self.factor(depth + 1)?))),
            Token::Open => {
                let inner = self.expr(depth + 1)?;
                match self.peek() {
                    Some((_, Token::Close)) => {
                        self.pos += 1;
                        Ok(inner)
                    }
                    Some((at, t)) => Err(ExprError {
                        offset: at,
                        message: format!("expected `)`, found {}", describe(t)),
                    }),
                    None => Err(ExprError {
                        offset: self.end,
                        message: "unclosed `(`".to_owned(),
                    }),
                }
            }
            Token::Close => Err(ExprError {
                offset,
                message: "unexpected `)`".to_owned(),
            }),
            Token::Word(word) => atom(word, offset),
        }
    }
}

fn atom(word: &str, offset: usize) -> Result<Expr, ExprError> {
    let err = |message: String| ExprError { offset, message };
    if matches!(word, "and" | "or") {
        return Err(err(format!("expected an atom, found `{word}`")));
    }
    let Some((kind, value)) = word.split_once(':') else {
        return Err(err(format!(
            "`{word}` is not an atom (expected taint:NAME, class:NAME, tool:GLOB or principal:GLOB)"
        )));
    };
    if value.is_empty() {
        return Err(err(format!("`{kind}:` needs a value")));
    }
    let glob = || Glob::new(value).map_err(|e| err(format!("{e} in `{word}`")));
    match kind {
        "taint" => Ok(Expr::Taint(value.into())),
        "class" => Ok(Expr::Class(value.into())),
        "tool" => Ok(Expr::Tool(glob()?)),
        "principal" => Ok(Expr::Principal(glob()?)),
        other => Err(err(format!(
            "unknown atom kind `{other}` (expected taint, class, tool or principal)"
        ))),
    }
}

#[cfg(test)]
#[path = "expr_tests.rs"]
mod tests;
