#!/usr/bin/env bash
# System packages used by the test suite: real mail clients (Thunderbird under Xvfb among them),
# real Postfix/Dovecot, chromium, GnuTLS's certtool (a second certificate verifier).
# Services are never started by the package scripts; tests start their own instances on loopback.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
PKGS=(openssl curl swaks libnet-ssleay-perl libio-socket-ssl-perl libauthen-sasl-perl
      mutt fetchmail getmail6 postfix dovecot-core dovecot-imapd dovecot-pop3d tmux
      chromium fonts-dejavu-core
      thunderbird xvfb xauth xdotool libnss3-tools gnutls-bin imagemagick
      systemd)  # systemd-analyze verify checks deploy/mailtls.service
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
# Keep package maintainer scripts from starting daemons (there is no init system here anyway).
if [ ! -e /usr/sbin/policy-rc.d ]; then
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
  chmod +x /usr/sbin/policy-rc.d
fi
apt-get update -q
apt-get install -y -q --no-install-recommends "${missing[@]}"
