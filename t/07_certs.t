# One certificate in two vhosts is fetched once and stapled in both; an
# ECDSA and an RSA certificate in one vhost each get their own response.
use strict;
use warnings FATAL => 'all';
use Apache::Test;
use lib 't/lib';
use RSTest;

plan tests => 6;

my $s1 = RSTest::wait_for(sub { my $h = RSTest::handshake('shared1'); $h->{stapled} && $h }, 5);
my $s2 = RSTest::handshake('shared2');
ok($s1 && $s1->{serial} eq RSTest::serial('shared'));
ok($s2->{stapled} && $s2->{serial} eq RSTest::serial('shared'));
ok(@{ RSTest::requests('shared') } == 1);

my $ec = RSTest::wait_for(sub {
    my $h = RSTest::handshake('dual', '-sigalgs', 'ECDSA+SHA256');
    $h->{stapled} && $h }, 5);
my $rsa = RSTest::wait_for(sub {
    my $h = RSTest::handshake('dual', '-sigalgs', 'rsa_pss_rsae_sha256:RSA+SHA256');
    $h->{stapled} && $h }, 5);
ok($ec && $ec->{serial} eq RSTest::serial('dual-ec'));
ok($rsa && $rsa->{serial} eq RSTest::serial('dual-rsa'));
ok($ec && $rsa && $ec->{raw} =~ /Peer signature type: ECDSA/ && $rsa->{raw} =~ /Peer signature type: RSA/);
