//! The parser of the text form that `print.rs` writes: `parse(&print(&g)) == g` for every
//! verified graph `g` (floats keep their bits, except that every NaN reads back as the
//! canonical quiet NaN, since the printer writes them all as `nan`).
//!
//! Grammar, one node a line (blank lines and `;` comments, whole-line or trailing, are skipped):
//!
//! ```text
//! node    := '%' N '=' op-text ':' dtype '[' extents ']'
//! op-text := 'input' '#' N | 'const' scalar | 'index' 'axis=' N
//!          | 'random' ('uniform' | 'normal') 'seed=' N
//!          | unary-or-binary-name operands | 'where' operands | 'cast' operand
//!          | 'reshape' operand | 'contiguous' operand
//!          | 'broadcast' operand 'axes=' list
//!          | 'reindex' operands exprs ['if' exprs] 'overflow=' scalar
//!          | 'reduce' reduce-name operand 'axes=' list ['keepdims']
//!          | 'reindex_reduce' reduce-name operands exprs ['if' exprs]
//! last    := 'return' [operand (',' operand)*]
//! ```
//!
//! Node ids need not be dense: `%k` names the node defined by the line `%k = ...`, and the graph
//! numbers nodes by position. A `const` or `overflow=` value is read in the node's dtype. The
//! index expressions are those of `IndexExpr`'s `Display`: fully parenthesised binaries,
//! `min(a, b)`, `max(a, b)`, `select(c, a, b)`, `e0[i0, i1]`, `i<k>`, `n<k>`, `m<k>`, and
//! `param(v)` (a runtime index parameter of value `v`).
//!
//! The parsed graph goes through [`crate::verify::verify`]; a failure is reported with the line of
//! the first offending node. `reindex_reduce` prints no overflow value (it is unused), so the
//! parser sets it to the zero of the node's dtype; graphs built elsewhere round-trip when they
//! follow the same convention.

use std::collections::HashMap;

use half::{bf16, f16};

use crate::dtype::{DType, Scalar};
use crate::expr::{IdxBin, IndexExpr};
use crate::graph::{Graph, Node, NodeId};
use crate::op::{BinaryOp, Distribution, IndexMap, Op, ReduceOp, UnaryOp};
use crate::shape::Shape;
use crate::verify::{VerifyError, verify};

/// Why a text could not be read as a graph.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text does not follow the grammar.
    #[error("line {line}: {message}")]
    Syntax {
        /// The 1-based line number.
        line: usize,
        /// What was expected and what was found.
        message: String,
    },
    /// The text is well formed but the graph breaks an invariant of the verifier.
    #[error("line {line}: {message}")]
    Invalid {
        /// The 1-based line of the first offending node (or of `return`).
        line: usize,
        /// The verifier's first message (and how many more there are).
        message: String,
        /// Every error, with the graph annotated.
        #[source]
        errors: VerifyError,
    },
}

impl ParseError {
    /// The 1-based line number the error refers to.
    pub fn line(&self) -> usize {
        match self {
            ParseError::Syntax { line, .. } | ParseError::Invalid { line, .. } => *line,
        }
    }
}

/// Parses the text form of a graph and verifies it.
pub fn parse(text: &str) -> Result<Graph, ParseError> {
    let mut g = Graph::new();
    let mut names: HashMap<u32, NodeId> = HashMap::new();
    let mut node_lines = Vec::new();
    let mut return_line = None;
    for (k, raw) in text.lines().enumerate() {
        let line = k + 1;
        let body = raw.split(';').next().unwrap_or("").trim();
        if body.is_empty() {
            continue;
        }
        let mut cur = Cursor {
            s: body,
            pos: 0,
            line,
        };
        if return_line.is_some() {
            return Err(cur.err("end of graph after `return`"));
        }
        if cur.eat_word("return") {
            g.outputs = cur.operands(&names)?;
            cur.end("end of line after the outputs")?;
            return_line = Some(line);
            continue;
        }
        let (name, node) = parse_node(&mut cur, &names)?;
        let id = g.push_unchecked(node);
        if names.insert(name, id).is_some() {
            return Err(syntax(line, format!("%{name} is defined twice")));
        }
        node_lines.push(line);
    }
    let Some(return_line) = return_line else {
        let last = text.lines().count().max(1);
        return Err(syntax(last, "expected `return` after the last node".into()));
    };
    verify(&g).map_err(|errors| {
        let (first, msg) = errors.errors[0].clone();
        let line = first.map_or(return_line, |id| node_lines[id.index()]);
        let more = errors.errors.len() - 1;
        let message = if more > 0 {
            format!("{msg} (and {more} more error(s))")
        } else {
            msg
        };
        ParseError::Invalid {
            line,
            message,
            errors,
        }
    })?;
    Ok(g)
}

fn syntax(line: usize, message: String) -> ParseError {
    ParseError::Syntax { line, message }
}

/// Parses one node line: `%k = ... : dtype[shape]`.
fn parse_node(
    cur: &mut Cursor<'_>,
    names: &HashMap<u32, NodeId>,
) -> Result<(u32, Node), ParseError> {
    if !cur.eat("%") {
        return Err(cur.err("a node `%N = ...` or `return`"));
    }
    let name = cur.number::<u32>("a node number after `%`")?;
    cur.expect("=")?;
    // The type suffix comes last and holds no `:` of its own; nothing before it contains `:`.
    let Some(colon) = cur.s.rfind(':').filter(|&c| c >= cur.pos) else {
        return Err(cur.err("an op followed by `: dtype[shape]`"));
    };
    let (dtype, shape) = {
        let mut ty = Cursor {
            s: cur.s,
            pos: colon + 1,
            line: cur.line,
        };
        let dtype = ty.dtype()?;
        let shape = Shape(ty.list("a shape `[d0, d1, ...]`", |c| {
            c.number::<usize>("an extent")
        })?);
        ty.end("end of line after the shape")?;
        (dtype, shape)
    };
    cur.s = &cur.s[..colon];
    let opname = cur.word();
    let (op, inputs) = match opname {
        "input" => {
            cur.expect("#")?;
            let slot = cur.number::<usize>("an input slot after `#`")?;
            (Op::Input { slot }, Vec::new())
        }
        "const" => (Op::Const(cur.scalar(dtype)?), Vec::new()),
        "index" => {
            cur.expect_key("axis")?;
            let axis = cur.number::<usize>("an axis")?;
            (Op::Index { axis }, Vec::new())
        }
        "random" => {
            let dist = match cur.word() {
                "uniform" => Distribution::Uniform,
                "normal" => Distribution::Normal,
                _ => return Err(cur.err_back("a distribution (`uniform` or `normal`)")),
            };
            cur.expect_key("seed")?;
            let seed = cur.number::<u64>("a seed")?;
            (Op::Random { seed, dist }, Vec::new())
        }
        "where" => (Op::Where, cur.operands(names)?),
        "cast" => (Op::Cast(dtype), cur.operands(names)?),
        "reshape" => (Op::Reshape, cur.operands(names)?),
        "contiguous" => (Op::Contiguous, cur.operands(names)?),
        "broadcast" => {
            let inputs = cur.operands(names)?;
            cur.expect_key("axes")?;
            let axes = cur.list("an axis list `[a0, a1, ...]`", |c| c.number("an axis"))?;
            (Op::BroadcastTo { axes }, inputs)
        }
        "reindex" => {
            let inputs = cur.operands(names)?;
            let (exprs, conds) = cur.exprs_and_conds()?;
            cur.expect_key("overflow")?;
            let overflow = cur.scalar(dtype)?;
            let map = IndexMap {
                exprs,
                overflow,
                conds,
            };
            (Op::Reindex(map), inputs)
        }
        "reduce" => {
            let op = cur.reduce_op()?;
            let inputs = cur.operands(names)?;
            cur.expect_key("axes")?;
            let axes = cur.list("an axis list `[a0, a1, ...]`", |c| c.number("an axis"))?;
            let keepdims = cur.eat_word("keepdims");
            (Op::Reduce { op, axes, keepdims }, inputs)
        }
        "reindex_reduce" => {
            let op = cur.reduce_op()?;
            let inputs = cur.operands(names)?;
            let (exprs, conds) = cur.exprs_and_conds()?;
            let map = IndexMap {
                exprs,
                overflow: Scalar::zero(dtype),
                conds,
            };
            (Op::ReindexReduce { op, map }, inputs)
        }
        name => {
            if let Some(u) = UnaryOp::ALL.into_iter().find(|u| u.name() == name) {
                (Op::Unary(u), cur.operands(names)?)
            } else if let Some(b) = BinaryOp::ALL.into_iter().find(|b| b.name() == name) {
                (Op::Binary(b), cur.operands(names)?)
            } else {
                return Err(cur.err_back("an op name (`input`, `const`, `add`, `reindex`, ...)"));
            }
        }
    };
    cur.end("`: dtype[shape]` after the op")?;
    let node = Node {
        op,
        inputs,
        dtype,
        shape,
    };
    Ok((name, node))
}

/// A position in one line of text.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
    line: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        &self.s[self.pos..]
    }

    fn skip_ws(&mut self) {
        let r = self.rest();
        self.pos += r.len() - r.trim_start().len();
    }

    /// A syntax error at the current position: "expected X, found `Y`".
    fn err(&mut self, expected: &str) -> ParseError {
        self.skip_ws();
        let found: String = self
            .rest()
            .split_whitespace()
            .next()
            .map(|t| t.chars().take(24).collect())
            .unwrap_or_default();
        let found = if found.is_empty() {
            "end of line".to_string()
        } else {
            format!("`{found}`")
        };
        syntax(self.line, format!("expected {expected}, found {found}"))
    }

    /// A syntax error about the word just read (the cursor steps back over it).
    fn err_back(&mut self, expected: &str) -> ParseError {
        let before = self.s[..self.pos].trim_end();
        let start = before
            .rfind(|c: char| c.is_whitespace())
            .map_or(0, |p| p + 1);
        self.pos = start;
        self.err(expected)
    }

    /// Consumes `tok` (after whitespace) if it comes next.
    fn eat(&mut self, tok: &str) -> bool {
        self.skip_ws();
        if self.rest().starts_with(tok) {
            self.pos += tok.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, tok: &str) -> Result<(), ParseError> {
        if self.eat(tok) {
            Ok(())
        } else {
            Err(self.err(&format!("`{tok}`")))
        }
    }

    /// Consumes `key=`.
    fn expect_key(&mut self, key: &str) -> Result<(), ParseError> {
        let save = self.pos;
        if self.eat_word(key) && self.eat("=") {
            return Ok(());
        }
        self.pos = save;
        Err(self.err(&format!("`{key}=`")))
    }

    /// Reads a word: letters, digits and `_`.
    fn word(&mut self) -> &'a str {
        self.skip_ws();
        let r = self.rest();
        let n = r
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(r.len());
        self.pos += n;
        &r[..n]
    }

    /// Consumes the word `w` if it comes next (and is not a prefix of a longer word).
    fn eat_word(&mut self, w: &str) -> bool {
        let save = self.pos;
        if self.word() == w {
            true
        } else {
            self.pos = save;
            false
        }
    }

    /// Requires the end of the text.
    fn end(&mut self, expected: &str) -> Result<(), ParseError> {
        self.skip_ws();
        if self.rest().is_empty() {
            Ok(())
        } else {
            Err(self.err(expected))
        }
    }

    /// Reads a decimal number (an optional `-`, then digits).
    fn number<T: std::str::FromStr>(&mut self, what: &str) -> Result<T, ParseError> {
        self.skip_ws();
        let r = self.rest();
        let sign = usize::from(r.starts_with('-'));
        let n = r[sign..]
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(r.len() - sign);
        match r[..sign + n].parse::<T>() {
            Ok(v) if n > 0 => {
                self.pos += sign + n;
                Ok(v)
            }
            _ => Err(self.err(what)),
        }
    }

    /// Reads a value of `dtype` as `Scalar`'s `Display` writes it.
    fn scalar(&mut self, dtype: DType) -> Result<Scalar, ParseError> {
        self.skip_ws();
        let r = self.rest();
        let n = r
            .find(|c: char| c.is_whitespace() || c == ',' || c == ']')
            .unwrap_or(r.len());
        let t = &r[..n];
        let float = |t: &str| -> Option<f64> {
            match t {
                "nan" => Some(f64::NAN),
                "inf" => Some(f64::INFINITY),
                "-inf" => Some(f64::NEG_INFINITY),
                _ if t.starts_with(|c: char| c.is_ascii_digit() || c == '-' || c == '.') => {
                    t.parse().ok()
                }
                _ => None,
            }
        };
        let v = match dtype {
            DType::Bool => match t {
                "true" => Some(Scalar::Bool(true)),
                "false" => Some(Scalar::Bool(false)),
                _ => None,
            },
            DType::U8 => t.parse().ok().map(Scalar::U8),
            DType::I32 => t.parse().ok().map(Scalar::I32),
            DType::I64 => t.parse().ok().map(Scalar::I64),
            // f32 is read directly, not through f64 (which could round twice).
            DType::F32 => match t {
                "nan" => Some(f32::NAN),
                "inf" => Some(f32::INFINITY),
                "-inf" => Some(f32::NEG_INFINITY),
                _ if float(t).is_some() => t.parse().ok(),
                _ => None,
            }
            .map(Scalar::F32),
            DType::F64 => float(t).map(Scalar::F64),
            // The printer writes f16/bf16 values exactly, so one rounding from f64 is exact.
            DType::F16 => float(t).map(|v| Scalar::F16(f16::from_f64(v))),
            DType::BF16 => float(t).map(|v| Scalar::BF16(bf16::from_f64(v))),
        };
        match v {
            Some(v) => {
                self.pos += n;
                Ok(v)
            }
            None => Err(self.err(&format!("a value of dtype {dtype}"))),
        }
    }

    fn dtype(&mut self) -> Result<DType, ParseError> {
        let w = self.word();
        DType::from_name(w).ok_or_else(|| self.err_back("a dtype (`f32`, `i64`, `bool`, ...)"))
    }

    fn reduce_op(&mut self) -> Result<ReduceOp, ParseError> {
        let w = self.word();
        ReduceOp::ALL
            .into_iter()
            .find(|r| r.name() == w)
            .ok_or_else(|| self.err_back("a reduce op (`sum`, `prod`, `max`, `min`, `all`, `any`)"))
    }

    /// Reads `[x, y, ...]` with `item` for each element.
    fn list<T>(
        &mut self,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<T, ParseError>,
    ) -> Result<Vec<T>, ParseError> {
        if !self.eat("[") {
            return Err(self.err(what));
        }
        let mut v = Vec::new();
        if self.eat("]") {
            return Ok(v);
        }
        loop {
            v.push(item(self)?);
            if self.eat("]") {
                return Ok(v);
            }
            if !self.eat(",") {
                return Err(self.err("`,` or `]`"));
            }
        }
    }

    /// Reads `%a, %b, ...` (possibly none), resolving names to node ids.
    fn operands(&mut self, names: &HashMap<u32, NodeId>) -> Result<Vec<NodeId>, ParseError> {
        let mut v = Vec::new();
        self.skip_ws();
        if !self.rest().starts_with('%') {
            return Ok(v);
        }
        loop {
            self.expect("%")?;
            let start = self.pos;
            let name = self.number::<u32>("a node number after `%`")?;
            match names.get(&name) {
                Some(&id) => v.push(id),
                None => {
                    self.pos = start;
                    return Err(syntax(
                        self.line,
                        format!("expected a defined operand, found undefined %{name}"),
                    ));
                }
            }
            if !self.eat(",") {
                return Ok(v);
            }
        }
    }

    /// Reads `[exprs]` and an optional `if [conds]`.
    fn exprs_and_conds(&mut self) -> Result<(Vec<IndexExpr>, Vec<IndexExpr>), ParseError> {
        let exprs = self.list("index expressions `[e0, e1, ...]`", |c| c.expr())?;
        let conds = if self.eat_word("if") {
            self.list("conditions `[c0, c1, ...]`", |c| c.expr())?
        } else {
            Vec::new()
        };
        Ok((exprs, conds))
    }

    /// `expr := operand [binop operand]`
    fn expr(&mut self) -> Result<IndexExpr, ParseError> {
        let a = self.operand()?;
        match self.idx_bin() {
            Some(op) => Ok(IndexExpr::bin(op, a, self.operand()?)),
            None => Ok(a),
        }
    }

    fn idx_bin(&mut self) -> Option<IdxBin> {
        // Two-character symbols first, so `<=` is not read as `<`.
        const SYMBOLS: [(&str, IdxBin); 11] = [
            ("<=", IdxBin::Le),
            ("==", IdxBin::Eq),
            ("!=", IdxBin::Ne),
            ("&&", IdxBin::And),
            ("||", IdxBin::Or),
            ("+", IdxBin::Add),
            ("-", IdxBin::Sub),
            ("*", IdxBin::Mul),
            ("/", IdxBin::Div),
            ("%", IdxBin::Mod),
            ("<", IdxBin::Lt),
        ];
        SYMBOLS
            .into_iter()
            .find(|(s, _)| self.eat(s))
            .map(|(_, op)| op)
    }

    /// `operand := '(' expr ')' | integer | i<k> | n<k> | m<k> | e<j>[..] | min(..) | max(..) |
    /// select(..) | param(integer)`
    fn operand(&mut self) -> Result<IndexExpr, ParseError> {
        const WHAT: &str = "an index expression";
        if self.eat("(") {
            let e = self.expr()?;
            self.expect(")")?;
            return Ok(e);
        }
        self.skip_ws();
        if self
            .rest()
            .starts_with(|c: char| c == '-' || c.is_ascii_digit())
        {
            return Ok(IndexExpr::Const(self.number::<i64>("an i64 constant")?));
        }
        let start = self.pos;
        let r = self.rest();
        let letters = r
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(r.len());
        self.pos += letters;
        let e = match &r[..letters] {
            "min" | "max" => {
                let op = if r.starts_with("min") {
                    IdxBin::Min
                } else {
                    IdxBin::Max
                };
                self.expect("(")?;
                let a = self.expr()?;
                self.expect(",")?;
                let b = self.expr()?;
                self.expect(")")?;
                IndexExpr::bin(op, a, b)
            }
            "select" => {
                self.expect("(")?;
                let c = self.expr()?;
                self.expect(",")?;
                let a = self.expr()?;
                self.expect(",")?;
                let b = self.expr()?;
                self.expect(")")?;
                IndexExpr::select(c, a, b)
            }
            "param" => {
                self.expect("(")?;
                let v = self.number::<i64>("an i64 parameter value")?;
                self.expect(")")?;
                IndexExpr::Param(v)
            }
            "i" | "n" | "m" | "e" if self.rest().starts_with(|c: char| c.is_ascii_digit()) => {
                let k = self.number::<usize>("an axis number")?;
                match &r[..1] {
                    "i" => IndexExpr::Idx(k),
                    "n" => IndexExpr::IterDim(k),
                    "m" => IndexExpr::TargetDim(k),
                    _ => {
                        let ix = self.list("`[` after an extra", |c| c.expr())?;
                        IndexExpr::Extra(k, ix)
                    }
                }
            }
            _ => {
                self.pos = start;
                return Err(self.err(WHAT));
            }
        };
        Ok(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::print::print;

    fn err(text: &str) -> ParseError {
        match parse(text) {
            Ok(g) => panic!("parsed:\n{g}"),
            Err(e) => e,
        }
    }

    #[test]
    fn doc_example_round_trips() {
        let text = "\
%0 = input #0 : f32[4, 3]
%1 = const 2.0 : f32[]
%2 = broadcast %1 axes=[0, 1] : f32[4, 3]
%3 = mul %0, %2 : f32[4, 3]
%4 = reindex %3 [i1, i0] overflow=0.0 : f32[3, 4]
%5 = reduce sum %4 axes=[1] keepdims : f32[3, 1]
return %5
";
        let g = parse(text).expect("parses");
        assert_eq!(print(&g), text);
    }

    #[test]
    fn comments_sparse_ids_and_expressions() {
        let text = "\
; a comment
%10 = input #0 : i64[3, 4]   ; trailing comment
%7 = const -inf : f64[3]
%3 = reindex %10 [min((i0*2)+1, m0-1), select(i0<(-3), 0, (n0-1)-i0)] if [(i0%2)==0] overflow=-5 : i64[3, 4]
%4 = reindex %10, %3 [e0[i0, i1], 2] overflow=0 : i64[3, 4]
%5 = reindex_reduce max %10 [i0] if [(i0 <= 1) || (i1 != 2)] : i64[3]
%6 = reindex %10 [i0+param(-2), (i1*2)+param(1)] overflow=0 : i64[3, 2]
return %4, %5, %3, %6
";
        let g = parse(text).expect("parses");
        assert_eq!(g.nodes.len(), 6);
        assert_eq!(g.outputs, vec![NodeId(3), NodeId(4), NodeId(2), NodeId(5)]);
        assert_eq!(g.nodes[1].op, Op::Const(Scalar::F64(f64::NEG_INFINITY)));
        let printed = print(&g);
        assert!(printed.contains("[min((i0*2)+1, m0-1), select(i0<(-3), 0, (n0-1)-i0)]"));
        assert!(printed.contains("[i0+param(-2), (i1*2)+param(1)]"));
        assert_eq!(parse(&printed).expect("parses again"), g);
    }

    #[test]
    fn float_constants_keep_their_bits() {
        for (v, d) in [
            (Scalar::F32(-0.0), "f32"),
            (Scalar::F32(1e-45), "f32"),
            (Scalar::F32(f32::MAX), "f32"),
            (Scalar::F32(0.1), "f32"),
            (Scalar::F64(0.1), "f64"),
            (Scalar::F64(f64::MIN_POSITIVE / 3.0), "f64"),
            (Scalar::F16(f16::from_f32(0.1)), "f16"),
            (Scalar::BF16(bf16::from_f32(-3.3)), "bf16"),
            (Scalar::F32(f32::NAN), "f32"),
            (Scalar::I64(i64::MIN), "i64"),
            (Scalar::U8(255), "u8"),
        ] {
            let text = format!("%0 = const {v} : {d}[2]\nreturn %0\n");
            let g = parse(&text).expect("parses");
            assert_eq!(g.nodes[0].op, Op::Const(v), "{text}");
        }
    }

    #[test]
    fn unknown_op_names_its_line() {
        let e = err("%0 = input #0 : f32[2]\n%1 = frobnicate %0 : f32[2]\nreturn %1\n");
        assert_eq!(e.line(), 2);
        let msg = e.to_string();
        assert!(msg.starts_with("line 2: expected an op name"), "{msg}");
        assert!(msg.contains("`frobnicate"), "{msg}");
    }

    #[test]
    fn undefined_operand_names_its_line() {
        let e = err("%0 = input #0 : f32[2]\n\n%1 = neg %4 : f32[2]\nreturn %1\n");
        assert_eq!(
            e.to_string(),
            "line 3: expected a defined operand, found undefined %4"
        );
        let e = err("%0 = input #0 : f32[2]\nreturn %0, %1\n");
        assert_eq!(e.line(), 2);
    }

    #[test]
    fn bad_types_and_values() {
        let e = err("%0 = input #0 : f33[2]\nreturn %0\n");
        assert_eq!(
            e.to_string(),
            "line 1: expected a dtype (`f32`, `i64`, `bool`, ...), found `f33[2]`"
        );
        let e = err("%0 = const 1.5 : i32[2]\nreturn %0\n");
        assert_eq!(
            e.to_string(),
            "line 1: expected a value of dtype i32, found `1.5`"
        );
        let e = err("%0 = input #0 : f32[2\nreturn %0\n");
        assert_eq!(e.line(), 1);
        let e = err("%0 = input #0 : f32[2]\n");
        assert!(e.to_string().contains("expected `return`"), "{e}");
        let e = err("%0 = input #0 : f32[2]\nreturn %0\n%1 = neg %0 : f32[2]\n");
        assert_eq!(e.line(), 3);
        let e = err(
            "%0 = input #0 : f32[2]\n%1 = reindex %0 [i0 +] overflow=0.0 : f32[2]\nreturn %1\n",
        );
        assert_eq!(e.line(), 2);
        assert!(
            e.to_string().contains("expected an index expression"),
            "{e}"
        );
    }

    #[test]
    fn verifier_errors_name_the_line() {
        let e = err(
            "%0 = input #0 : f32[2]\n%1 = input #1 : f32[2]\n%2 = add %0, %1 : i32[2]\nreturn %2\n",
        );
        assert_eq!(e.line(), 3);
        let msg = e.to_string();
        assert!(
            msg.starts_with("line 3: add: output dtype mismatch"),
            "{msg}"
        );
        assert!(matches!(e, ParseError::Invalid { .. }));
        let e = err("%0 = input #0 : f32[2]\n%1 = input #0 : f64[2]\nreturn %0\n");
        assert_eq!(e.line(), 2);
    }
}
