# pam-u2f as Debian 12 ships it (libpam-u2f and pamu2fcfg 1.1.0, libfido2
# 1.12): registrations with pamu2fcfg (plain, -r, -N, -V) with the daemon's
# default attestation, and sign-ins through pam_u2f.so driven by pamtester.
#
# Sourced by e2e.sh in stage 3 (the PIN set, --prompt agent: presence and
# built-in UV come from the owner's agent, whose test pinentry confirms and
# types the PIN). Uses e2e.sh's run, run_pin, pass, fail, out, $t, $pin,
# $control, $SVC_UID and $PASSKEYCTL_BIN. Everything runs as root, the
# user the mappings are for.

pam_origin="pam://$(hostname)" # pamu2fcfg's and pam_u2f's default origin and RP ID
pam_dir=$t/pam
mkdir -p "$pam_dir"
# pamu2fcfg ARGS...: the real one, then the newline its mapping line lacks
# (1.1.0 prints none), for run's VERBOSE copy of the output.
pamu2fcfg=(bash -c 'pamu2fcfg "$@"; rc=$?; echo; exit $rc' pamu2fcfg)

# The host's /etc is read-only here: a writable copy of /etc/pam.d over it
# (the guest's mount namespace only), with the test service.
pam_etc=/tmp/pam.d
mkdir -p "$pam_etc"
cp -a /etc/pam.d/. "$pam_etc/"
mount --bind "$pam_etc" /etc/pam.d
# pam_service AUTHFILE [OPTIONS...]: the passkeyd-test service with one
# auth line (cue: pam_u2f says "Please touch the device." through PAM;
# debug: libfido2 logs the authenticator's answers, which the refusals
# below check).
pam_service() {
	local authfile=$1
	shift
	printf 'auth required pam_u2f.so authfile=%s cue debug %s\n' "$authfile" "$*" >/etc/pam.d/passkeyd-test
}
# pam_auth NAME INPUT: pamtester passkeyd-test root authenticate, with
# INPUT on standard input (pam_u2f asks "Please enter the PIN: " through
# the PAM conversation, which pamtester reads there).
pam_auth() { printf '%s' "$2" | run "$1" 60 pamtester -v passkeyd-test root authenticate; }
pam_ok() { pam_auth "$@" && grep -q 'successfully authenticated' "$t/$1.out"; }
# pam_refused NAME INPUT CAUSE: pam_u2f's refusal, not a broken service,
# and for the reason CAUSE (a line of libfido2's log) says.
pam_refused() { ! pam_auth "$1" "$2" && grep -q 'Authentication failure' "$t/$1.out" && grep -qF "$3" "$t/$1.out"; }
# libfido2's log lines: the authenticator's CTAP status, and its verdict on
# an assertion signature.
no_credentials='cbor_parse_reply: blob[0]=0x2e' # CTAP2_ERR_NO_CREDENTIALS
pin_invalid='cbor_parse_reply: blob[0]=0x31'    # CTAP2_ERR_PIN_INVALID
bad_signature='es256_pk_verify_sig: es256_verify_sig'
# authfile NAME LINE...: a mapping file, root's and 0600 as pam_u2f wants.
authfile() {
	local f=$pam_dir/$1
	shift
	printf '%s\n' "$@" >"$f"
	chmod 0600 "$f"
	echo "$f"
}

# --- Registrations ----------------------------------------------------------
# mapping NAME: root's mapping line from pamu2fcfg's output.
mapping() { grep -aoE '(^|[^[:alnum:]])root:[^[:space:]]+' "$t/$1.out" | sed 's/^[^r]*root:/root:/' | tail -1; }
declare -A pam_map
for v in plain r N V; do
	flag=-$v
	[ "$v" = plain ] && flag=
	# shellcheck disable=SC2086 # no flag for the plain registration
	if run_pin "pamu2fcfg-$v" 90 "${pamu2fcfg[@]}" $flag && pam_map[$v]=$(mapping "pamu2fcfg-$v") && [ -n "${pam_map[$v]}" ]; then
		kh=$(cut -d, -f1 <<<"${pam_map[$v]}")
		kh=${kh#root:}
		[ "$kh" = '*' ] || kh="<${#kh}-char key handle>"
		pass "pamu2fcfg${flag:+ $flag} (mapping root:$kh,<public key>,$(cut -d, -f3- <<<"${pam_map[$v]}"); $(cat "$t/pamu2fcfg-$v.prompts") PIN prompts)"
	else
		fail "pamu2fcfg${flag:+-$v}" "$(out "pamu2fcfg-$v")"
	fi
done
# -r prints "*" for the key handle: pam_u2f then asks for the RP's
# discoverable credential.
[ -n "${pam_map[r]:-}" ] && [ "$(cut -d, -f1 <<<"${pam_map[r]}")" != 'root:*' ] &&
	fail pamu2fcfg-r "key handle of a resident mapping is not '*': ${pam_map[r]}"

# --- Sign-ins ---------------------------------------------------------------
if [ -n "${pam_map[plain]:-}" ]; then
	pam_service "$(authfile plain "${pam_map[plain]}")"
	if pam_ok pam-auth-plain ''; then
		pass "pam_u2f-authenticate (pamtester, presence through the agent)"
	else
		fail pam_u2f-authenticate "$(out pam-auth-plain)"
	fi
fi
if [ -n "${pam_map[r]:-}" ]; then
	pam_service "$(authfile resident "${pam_map[r]}")"
	if pam_ok pam-auth-resident ''; then
		pass "pam_u2f-authenticate-resident (the discoverable credential of $pam_origin)"
	else
		fail pam_u2f-authenticate-resident "$(out pam-auth-resident)"
	fi
fi
if [ -n "${pam_map[N]:-}" ]; then
	pam_service "$(authfile pin "${pam_map[N]}")" pinverification=1
	if pam_ok pam-auth-pin "$pin"$'\n'; then
		pass "pam_u2f-authenticate-pinverification (the PIN through the PAM conversation)"
	else
		fail pam_u2f-authenticate-pinverification "$(out pam-auth-pin)"
	fi
fi
if [ -n "${pam_map[V]:-}" ]; then
	pam_service "$(authfile uv "${pam_map[V]}")" userverification=1
	n=$(getpins)
	if pam_ok pam-auth-uv ''; then
		pass "pam_u2f-authenticate-userverification (built-in UV: the agent's pinentry gave the PIN $(($(getpins) - n)) time(s))"
	else
		fail pam_u2f-authenticate-userverification "$(out pam-auth-uv)"
	fi
fi

# --- Refusals -----------------------------------------------------------------
# A key this authenticator never made: a syntactically valid mapping with
# a random key handle (of a real one's length) and a real public key.
if [ -n "${pam_map[plain]:-}" ] && [ -n "${pam_map[V]:-}" ]; then
	plain_kh=$(cut -d, -f1 <<<"${pam_map[plain]}")
	plain_pk=$(cut -d, -f2 <<<"${pam_map[plain]}")
	v_pk=$(cut -d, -f2 <<<"${pam_map[V]}")
	rand_kh=$(head -c "$(printf '%s' "${plain_kh#root:}" | base64 -d 2>/dev/null | wc -c)" /dev/urandom | base64 -w0)
	pam_service "$(authfile random "root:$rand_kh,$plain_pk,es256,+presence")"
	if pam_refused pam-refuse-random '' "$no_credentials"; then
		pass "pam_u2f-refuses-unknown-key-handle (the key answers NO_CREDENTIALS)"
	else
		fail pam_u2f-refuses-unknown-key-handle "$(out pam-refuse-random)"
	fi
	# The right key handle with another credential's public key: pam_u2f
	# checks the signature.
	pam_service "$(authfile wrongkey "$plain_kh,$v_pk,es256,+presence")"
	if pam_refused pam-refuse-wrongkey '' "$bad_signature"; then
		pass "pam_u2f-refuses-another-credentials-public-key (the assertion's signature fails)"
	else
		fail pam_u2f-refuses-another-credentials-public-key "$(out pam-refuse-wrongkey)"
	fi
fi
# A key handle this key made for another origin (another machine's
# pam://): it does not open under this RP ID.
if run_pin pamu2fcfg-other 90 "${pamu2fcfg[@]}" -o pam://elsewhere -i pam://elsewhere &&
	other=$(mapping pamu2fcfg-other) && [ -n "$other" ]; then
	pam_service "$(authfile other "$other")"
	if pam_refused pam-refuse-other '' "$no_credentials"; then
		pass "pam_u2f-refuses-another-origins-mapping (pam://elsewhere's key handle at $pam_origin: NO_CREDENTIALS)"
	else
		fail pam_u2f-refuses-another-origins-mapping "$(out pam-refuse-other)"
	fi
else
	fail pam_u2f-refuses-another-origins-mapping "pamu2fcfg -o pam://elsewhere: $(out pamu2fcfg-other)"
fi
# A wrong PIN (one: the TPM's dictionary-attack counter keeps it).
if [ -n "${pam_map[N]:-}" ]; then
	pam_service "$pam_dir/pin" pinverification=1
	if pam_refused pam-refuse-pin "${pin}9"$'\n' "$pin_invalid"; then
		pass "pam_u2f-refuses-wrong-pin (the key answers PIN_INVALID)"
	else
		fail pam_u2f-refuses-wrong-pin "$(out pam-refuse-pin)"
	fi
fi
# The discoverable credential of pamu2fcfg -r, deleted with passkeyctl:
# the same mapping that signed in above is refused.
pk_ctl=("$PASSKEYCTL_BIN" --control "$control" --daemon-user "$SVC_UID")
if [ -n "${pam_map[r]:-}" ]; then
	if run pam-list 60 "${pk_ctl[@]}" list </dev/null && grep -qF "$pam_origin" "$t/pam-list.out" &&
		run_pin pam-delete 60 "${pk_ctl[@]}" delete --rp "$pam_origin" --yes --stdin &&
		run pam-list-after 60 "${pk_ctl[@]}" list </dev/null && ! grep -qF "$pam_origin" "$t/pam-list-after.out"; then
		pam_service "$pam_dir/resident"
		if pam_refused pam-refuse-deleted '' "$no_credentials"; then
			pass "pam_u2f-refuses-deleted-passkey (passkeyctl delete --rp $pam_origin; then NO_CREDENTIALS)"
		else
			fail pam_u2f-refuses-deleted-passkey "$(out pam-refuse-deleted)"
		fi
	else
		fail pam_u2f-refuses-deleted-passkey "passkeyctl: $(out pam-list) $(out pam-delete) $(out pam-list-after)"
	fi
fi

umount /etc/pam.d
