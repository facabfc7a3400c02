"""English words for the tiny models' vocabularies, so their random output reads (and speaks) as words.

Order matters: the shipped files are byte-for-byte reproducible, so append new words only to the end
of a list and regenerate the assets.
"""

from __future__ import annotations

# The tiny GGUF's word pieces (also the first words of the tiny Whisper's vocabulary).
CHAT_WORDS: tuple[str, ...] = tuple(
    """
the be to of and a in that have I it for not on with he as you do at this but his by from they we say
her she or an will my one all would there their what so up out if about who get which go me when make can
like time no just him know take people into year your good some could them see other than then now look
only come its over think also back after use two how our work first well way even new want because any
these give day most us is are was were has had been am hello hi yes okay thanks please sorry sure right
here where why very much more tell ask help talk name today tomorrow weather music play stop start again
let what's I'm it's don't can't that's
""".split()
)

# More everyday words for the tiny Whisper, whose word-level vocabulary has no sub-word pieces.
MORE_WORDS: tuple[str, ...] = tuple(
    """
three four five six seven eight nine ten hundred thousand morning evening night week month hour minute
second house home room door window car road city town country world water food coffee tea bread apple
table chair book phone computer light sound voice song story question answer idea reason problem thing
place part point fact case number group family friend child children man woman mother father brother
sister school office money game team line word letter list page picture movie news life hand head eye
face heart mind body open close read write speak listen hear sing walk run sit stand wait turn move
change keep find show try call need feel leave put mean become begin seem bring hold happen learn buy
pay meet send build stay fall cut reach kill remain suggest raise pass sell decide return explain hope
develop carry break receive agree support hit produce eat cover catch draw choose cause follow remember
love live believe big small long short high low old young great little own same few important early late
hard easy real best better free full clear true warm cold hot quiet loud happy sad ready simple
never always often sometimes soon still already almost enough quite really maybe perhaps together
inside outside above below under between before during until while since though although however
red blue green yellow black white dog cat bird fish tree flower sun moon star sky rain snow wind
""".split()
)
