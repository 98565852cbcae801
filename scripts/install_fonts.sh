#!/usr/bin/env bash
# Installs Debian font packages that give the notMNIST-style generator many distinct typefaces
# (fonts-aenigma alone: ~465 display faces; the whole list, ~40 MiB: several hundred more).
# Only as root with apt available; otherwise it says so and the generator uses what is installed
# (at least matplotlib's bundled DejaVu/STIX fonts).
set -u
PKGS="fonts-aenigma fonts-liberation2 fonts-freefont-ttf fonts-urw-base35 fonts-texgyre fonts-lmodern
fonts-crosextra-carlito fonts-crosextra-caladea fonts-sil-gentium fonts-sil-charis fonts-sil-andika
fonts-linuxlibertine fonts-ebgaramond fonts-cantarell fonts-comfortaa fonts-hack fonts-inconsolata fonts-lato
fonts-open-sans fonts-roboto-unhinted fonts-junicode fonts-stix fonts-oflb-asana-math fonts-firacode
fonts-adf-accanthis fonts-adf-baskervald fonts-adf-berenis fonts-adf-gillius fonts-adf-universalis fonts-cabin
fonts-dkg-handwriting fonts-femkeklaver fonts-gfs-didot fonts-gfs-artemisia fonts-karla fonts-lobster
fonts-beteckna fonts-breip fonts-dustin fonts-f500"
if [ "$(id -u)" != "0" ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "fonts: not root or no apt-get; using the fonts already installed"
  exit 0
fi
missing=""
for p in $PKGS; do
  dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"
done
if [ -z "$missing" ]; then
  echo "fonts: all $(echo $PKGS | wc -w) font packages present"
  exit 0
fi
echo "fonts: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends $missing >/dev/null 2>&1 \
  || echo "fonts: apt-get install failed; continuing with the fonts that are present"
