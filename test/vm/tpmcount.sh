#!/usr/bin/env bash
# TPM commands per CTAP operation, counted at the TPM through the kernel's
# resource manager (/dev/tpmrm0), the path every installed passkeyd takes.
#
# Boots the quick e2e VM (run.sh) with guest/tpmcount.sh as the guest
# script and swtpm logging every command it executes
# (PASSKEYD_VM_SWTPM_LOG). The guest runs passkeyd on /dev/tpmrm0 and
# libfido2's tools against it, TPMCOUNT_N operations per phase, with a
# marker command (TPM2_GetRandom of 0x7A00+phase bytes) before each phase;
# this script cuts swtpm's log at the markers and prints, per operation:
#
#   tpmcount OP  cmds/op N  model-ms M  (CC xK ...)  [failed/op F]
#
# where the parenthesis breaks N down by command code and F counts
# commands the TPM answered with an error (the resource manager's
# ContextSave of an object that was flushed meanwhile is one). Kernel
# commands of its own (TPM2_GetRandom for the hwrng) are not counted.
#
# M is a MODEL of the time a real TPM would take for those commands: the
# sum of a per-command time from this table, not a measurement. Sources:
# TPM2_Sign (ECDSA P-256) 200 ms is the p50 of Chrome's field data (issue
# 13; p95 600 ms); TPM2_CreatePrimary (ECC) 240 ms is systemd's figure
# (systemd PR 20716). No public per-command table was found for the rest:
# they are ASSUMPTIONS, scaled by the work each does on a discrete TPM:
# key generation like CreatePrimary (Create, CreateLoaded 240); an ECC
# point multiplication like half a Sign (StartAuthSession salted to an ECC
# key 100); an NV write (EvictControl 50); unwrapping a private area
# (Load 30, Unseal 20); a context's encryption and HMAC (ContextSave 15,
# ContextLoad 15); bookkeeping (FlushContext, ReadPublic, GetCapability,
# TestParms 5); anything else 10.
#
# Usage: test/vm/tpmcount.sh [LOG]   (TPMCOUNT_N, default 5)
#        test/vm/tpmcount.sh --parse LOG   (only parse a kept log)
# Exit status: 0, 1 on failure, 77 when the VM's prerequisites are missing.
set -euo pipefail
cd "$(dirname "$0")"

parse() {
	awk -v n="${TPMCOUNT_N:-5}" '
	# Hex strings throughout: POSIX awk (mawk) has no hex literals.
	BEGIN {
		name["10"] = "start-up"; name["11"] = "stop"
		name["20"] = "makeCredential"; name["30"] = "makeCredential-rk"
		name["40"] = "getAssertion"; name["50"] = "getAssertion-pin"
		np = split("10 11 20 30 40 50", order, " ")
		# Command codes, TPM 2.0 Part 2, 6.5.2.
		cc["0131"] = "CreatePrimary"; cc["0153"] = "Create"; cc["0157"] = "Load"; cc["0191"] = "CreateLoaded"
		cc["015D"] = "Sign"; cc["015E"] = "Unseal"; cc["0155"] = "HMAC"; cc["0176"] = "StartAuthSession"
		cc["0162"] = "ContextSave"; cc["0161"] = "ContextLoad"; cc["0165"] = "FlushContext"
		cc["0173"] = "ReadPublic"; cc["017A"] = "GetCapability"; cc["018A"] = "TestParms"
		cc["0121"] = "EvictControl"; cc["017B"] = "GetRandom"; cc["0148"] = "Certify"
		cc["0150"] = "ObjectChangeAuth"; cc["0145"] = "Shutdown"; cc["0144"] = "Startup"
		# The latency model (ms), see the header.
		ms["Sign"] = 200; ms["CreatePrimary"] = 240; ms["Create"] = 240; ms["CreateLoaded"] = 240
		ms["StartAuthSession"] = 100; ms["EvictControl"] = 50; ms["Load"] = 30; ms["Unseal"] = 20
		ms["ContextSave"] = 15; ms["ContextLoad"] = 15; ms["FlushContext"] = 5; ms["ReadPublic"] = 5
		ms["GetCapability"] = 5; ms["TestParms"] = 5
		phase = ""; nk = 0
	}
	# swtpm control-channel traffic (CMD_* requests from qemu) is no TPM command.
	/Ctrl (Cmd|Rsp): length/ { mode = ""; next }
	/SWTPM_IO_Read: length/ { mode = "cmd"; nb = 0; next }
	/SWTPM_IO_Write: length/ {
		# The command is complete: 10 bytes (header only) or more.
		code = (mode == "cmd" && nb >= 10) ? b[8] b[9] : ""
		arg = (nb >= 12) ? b[10] b[11] : ""
		mode = (code == "") ? "" : "rsp"; nb = 0; next
	}
	/^ *([0-9A-F][0-9A-F] )+ *$/ {
		if (mode == "") next
		for (i = 1; i <= NF; i++) b[nb++] = $i
		if (mode == "rsp" && nb >= 10) {
			ok = (b[6] b[7] b[8] b[9] == "00000000"); mode = ""
			# Our marker: TPM2_GetRandom(0x7Axx).
			if (code == "017B" && substr(arg, 1, 2) == "7A") { phase = substr(arg, 3, 2); seen[phase] = 1; next }
			# The kernel hwrng: TPM2_GetRandom of its own.
			if (code == "017B" || !(phase in name)) next
			total[phase]++
			k = (code in cc) ? cc[code] : "0x" code
			if (!(k in keys)) { keys[k] = 1; key[++nk] = k }
			by[phase, k]++
			if (!ok) fail[phase]++
		}
		next
	}
	END {
		# Command names in alphabetical order (insertion sort).
		for (i = 2; i <= nk; i++) {
			v = key[i]
			for (j = i - 1; j >= 1 && key[j] > v; j--) key[j + 1] = key[j]
			key[j + 1] = v
		}
		for (j = 1; j <= np; j++) {
			p = order[j]
			if (!(p in seen)) continue
			s = ""; t = 0
			for (i = 1; i <= nk; i++) {
				if (!((p, key[i]) in by)) continue
				s = s sprintf(" %s x%g", key[i], by[p, key[i]] / n)
				t += by[p, key[i]] * ((key[i] in ms) ? ms[key[i]] : 10)
			}
			f = (p in fail) ? sprintf("  failed/op %g", fail[p] / n) : ""
			printf "tpmcount %-18s cmds/op %-5g model-ms %-5g (%s )%s\n", name[p], (p in total) ? total[p] / n : 0, t / n, substr(s, 2), f
		}
	}' "$1"
}

if [ "${1:-}" = --parse ]; then
	parse "$2"
	exit 0
fi
log=${1:-$(mktemp /var/tmp/passkeyd-swtpm-log.XXXXXX)}
rc=0
out=$(PASSKEYD_VM_GUEST="$PWD/guest/tpmcount.sh" PASSKEYD_VM_BROWSER=0 PASSKEYD_VM_SWTPM_LOG="$log" \
	TPMCOUNT_N="${TPMCOUNT_N:-5}" ./run.sh 2>&1) || rc=$?
if [ "$rc" != 0 ]; then
	printf '%s\n' "$out" >&2
	exit "$rc"
fi
printf '%s\n' "$out" | grep -E '^(VM tpmcount daemon|E2E FAIL|.*: FAIL)' >&2 || true
parse "$log"
[ -n "${1:-}" ] || rm -f "$log"
